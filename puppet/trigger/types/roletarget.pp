# @summary A `role:NAME` target: every host that has role NAME.
#
# Accepted by the `trigger` type's validation so that manifests can be written
# against it now; resolving roles to hosts is the job of the `trigger` command
# and not done yet (it refuses the entry with a one-line error).
type Trigger::Role = Pattern[/\Arole:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,250}[A-Za-z0-9_])?\z/]
