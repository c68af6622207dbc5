# @summary This node has a role: `trigger { ...: hosts => ['role:NAME'] }` reaches it.
#
# Drops the empty file CONFIG_DIR/roles/NAME, which the watcher on this node
# (`trigger::watch::etcd`, which passes `--config-dir`) reads within a few
# seconds and registers in etcd under its lease. A role removed from the
# catalog is purged from the directory and withdrawn; a watcher that stops
# loses its roles when its lease ends (`member_ttl`).
#
# @example
#   trigger::role { 'loadbalancer': }
#
# @param role
#   The role's name: the host name rule (letters, digits, '.', '-', '_').
# @param ensure
#   `absent` removes the file (purging does too).
# @param config_dir
#   The watcher's config_dir; default from trigger::globals.
define trigger::role (
  Trigger::Hostname $role = $title,
  Enum['present', 'absent'] $ensure = 'present',
  Optional[Trigger::Absolutepath] $config_dir = undef,
) {
  include trigger::globals
  $_config_dir = $config_dir.lest || { $trigger::globals::config_dir }
  unless defined(Trigger::Config_dir[$_config_dir]) {
    trigger::config_dir { $_config_dir: }
  }

  $file_ensure = $ensure ? { 'present' => 'file', default => 'absent' }
  file { "${_config_dir}/roles/${role}":
    ensure  => $file_ensure,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => "# Managed by Puppet (trigger::role): this node has role ${role}.\n",
  }
}
