# @summary Site-wide settings shared by every `trigger`, the watcher and `trigger::leader`.
#
# Their defaults are the module's data (`data/common.yaml`); set them in
# your Hiera (`trigger::globals::endpoints: [...]`) or by declaring the
# class before any `trigger`:
#
#   class { 'trigger::globals': endpoints => ['http://etcd1:2379', 'http://etcd2:2379'] }
#
# A `trigger`, `trigger::watch::etcd`, `trigger::role` or `trigger::election`
# given its own value uses that instead. `trigger` is a defined type, which
# Hiera cannot give defaults to: this class is where its site defaults live.
#
# @param trigger_bin
#   The `trigger` command; `trigger::install` links it here.
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
#   etcd user, `NAME` or `NAME:PASSWORD` (`--user`). A value from Hiera is
#   made Sensitive by the module's `lookup_options`.
class trigger::globals (
  Trigger::Absolutepath $trigger_bin,
  Trigger::Keyprefix $keyprefix,
  Trigger::Absolutepath $config_dir,
  Optional[Trigger::Endpoints] $endpoints = undef,
  Optional[Trigger::Absolutepath] $cacert = undef,
  Optional[Trigger::Absolutepath] $cert = undef,
  Optional[Trigger::Absolutepath] $key = undef,
  Optional[Trigger::Etcduser] $user = undef,
) {
}
