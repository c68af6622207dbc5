# @summary Site-wide settings shared by every `trigger`, the watcher and `trigger::leader`.
#
# Set them with Hiera (`trigger::params::trigger_bin: /opt/trigger/bin/trigger`)
# or by declaring the class before any `trigger`:
#
#   class { 'trigger::params': endpoints => ['http://etcd1:2379', 'http://etcd2:2379'] }
#
# A `trigger`, `trigger::watch::etcd`, `trigger::role` or `trigger::election`
# given its own value uses that instead.
#
# @param trigger_bin
#   The `trigger` command (installed in a virtualenv; this is usually a
#   symlink to its bin/trigger).
# @param endpoints
#   etcd client URLs. Unset: the command uses ETCDCTL_ENDPOINTS from its
#   environment, else http://127.0.0.1:2379.
# @param keyprefix
#   Where trigger keeps its keys in etcd.
# @param config_dir
#   Where the watcher reads this node's roles and elections (file names in
#   CONFIG_DIR/roles/ and CONFIG_DIR/elections/).
# @param cacert
#   CA certificate (PEM) that etcd's server certificate must chain to
#   (`--cacert`). Unset: the command's ETCDCTL_CACERT, if any.
# @param cert
#   Client certificate (PEM) for etcd (`--cert`); needs `key`.
# @param key
#   The client certificate's private key (PEM) (`--key`); needs `cert`.
# @param user
#   etcd user, `NAME` or `NAME:PASSWORD` (`--user`); a password is best given
#   as Sensitive (Hiera: `lookup_options` with `convert_to: Sensitive`).
class trigger::params (
  Trigger::Absolutepath $trigger_bin = '/usr/local/bin/trigger',
  Optional[Trigger::Endpoints] $endpoints = undef,
  Trigger::Keyprefix $keyprefix = '/puppet_trigger/events',
  Trigger::Absolutepath $config_dir = '/etc/trigger',
  Optional[Trigger::Absolutepath] $cacert = undef,
  Optional[Trigger::Absolutepath] $cert = undef,
  Optional[Trigger::Absolutepath] $key = undef,
  Optional[Trigger::Etcduser] $user = undef,
) {
}
