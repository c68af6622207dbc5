# @summary Site-wide settings shared by every `trigger` and the watcher.
#
# Set them with Hiera (`trigger::params::trigger_bin: /opt/trigger/bin/trigger`)
# or by declaring the class before any `trigger`:
#
#   class { 'trigger::params': endpoints => ['http://etcd1:2379', 'http://etcd2:2379'] }
#
# A `trigger` or `trigger::watch::etcd` given its own value uses that instead.
#
# @param trigger_bin
#   The `trigger` command (installed in a virtualenv; this is usually a
#   symlink to its bin/trigger).
# @param endpoints
#   etcd client URLs. Unset: the command uses ETCDCTL_ENDPOINTS from its
#   environment, else http://127.0.0.1:2379.
# @param keyprefix
#   Where trigger keeps its keys in etcd.
class trigger::params (
  Trigger::Absolutepath $trigger_bin = '/usr/local/bin/trigger',
  Optional[Trigger::Endpoints] $endpoints = undef,
  Trigger::Keyprefix $keyprefix = '/puppet_trigger/events',
) {
}
