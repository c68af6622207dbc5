# @summary A `role:NAME` target: every host whose watcher has role NAME.
#
# `trigger fire` resolves it to the live members of the role (watchers that
# registered it in etcd, from `trigger::role` or `roles`), at the moment of
# the fire. NAME follows the host name rule.
type Trigger::Roletarget = Pattern[/\Arole:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,250}[A-Za-z0-9_])?\z/]
