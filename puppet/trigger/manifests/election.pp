# @summary This node stands in an election (a named lock), e.g. `db master`.
#
# Drops the file CONFIG_DIR/elections/NAME; the watcher on this node reads
# it within a few seconds and puts this host up as a candidate in etcd,
# under its lease. The oldest live candidate holds the election; when the
# holder's watcher stops or loses etcd for longer than its lease
# (`member_ttl`), the next candidate takes over. Read the holder with the
# function `trigger::leader('NAME')` or the fact `trigger_leaders`.
#
# The file name is the election's name as it is (the watcher does not
# decode file names), which is why names are limited to Trigger::Electionname:
# ASCII letters, digits, spaces and `_ . : @ + = -`.
#
# @example
#   trigger::election { 'db master': }
#   $master = trigger::leader('db master')
#
# @param election
#   The election's name.
# @param ensure
#   `absent` withdraws this node's candidacy (purging does too).
# @param config_dir
#   The watcher's config_dir; default from trigger::globals.
define trigger::election (
  String $election = $title,
  Enum['present', 'absent'] $ensure = 'present',
  Optional[Trigger::Absolutepath] $config_dir = undef,
) {
  # Checked here rather than by the parameter's type so that the message
  # says what is allowed.
  unless $election =~ Trigger::Electionname {
    fail(@("MESSAGE"/L))
      Trigger::Election['${title}']: '${election}' is not a usable election name: \
      use ASCII letters, digits, spaces and _ . : @ + = - (starting and ending \
      with a letter, digit or _), at most 200 characters
      |- MESSAGE
  }
  include trigger::globals
  $_config_dir = $config_dir.lest || { $trigger::globals::config_dir }
  unless defined(Trigger::Config_dir[$_config_dir]) {
    trigger::config_dir { $_config_dir: }
  }

  $file_ensure = $ensure ? { 'present' => 'file', default => 'absent' }
  file { "${_config_dir}/elections/${election}":
    ensure  => $file_ensure,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => "# Managed by Puppet (trigger::election): this node stands in '${election}'.\n",
  }
}
