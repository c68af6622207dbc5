# @summary Run Puppet on this node whenever a trigger fires for it.
#
# Installs task-spooler and keeps `trigger watch` running: the watcher reads
# this host's inbox in etcd and queues `run_cmd` in task-spooler, so fires
# that land during a run join the next one instead of being lost.
#
# Where systemd is the init (fact `service_provider` is `systemd`, or
# /run/systemd/system exists: fact `trigger_systemd`), the watcher is the
# systemd unit `trigger-watch.service`. Elsewhere nothing starts it: run the
# command of the unit's ExecStart under the supervisor you have (the lab
# starts it itself), and keep `manage_service => false`.
#
# `trigger` itself (the Python package, in a virtualenv) is not installed by
# this class; `trigger_bin` says where it is.
#
# @example A masterless node, as in the seed
#   class { 'trigger::watch::etcd':
#     run_cmd => 'puppet apply manifest.pp',
#   }
#
# @param run_cmd
#   The command a triggered run executes, split into words the way a POSIX
#   shell would split them, without running a shell. It must not contain
#   double quotes, backslashes or line breaks.
# @param host
#   The host name whose inbox is watched: the name other nodes list in a
#   trigger's `hosts`.
# @param endpoints
#   etcd client URLs; default from trigger::params, then the watcher's
#   ETCDCTL_ENDPOINTS, then http://127.0.0.1:2379.
# @param keyprefix
#   Where the inboxes live; default from trigger::params.
# @param queue
#   `tsp` (task-spooler) or `inline` (the watcher runs `run_cmd` itself).
# @param trigger_bin
#   The `trigger` command; default from trigger::params.
# @param ts_socket
#   TS_SOCKET for task-spooler: a queue of the watcher's own. Unset: tsp's
#   default queue of the user (root), the one `tsp` shows in a root shell.
# @param manage_package
#   Install `package_name` when `queue` is `tsp`.
# @param package_name
#   The package with `tsp`.
# @param manage_unit
#   Write the systemd unit; default: when systemd is the init.
# @param manage_service
#   Keep the unit running and enabled; default: when systemd is the init.
# @param service_name
#   The name of the unit, without `.service`.
# @param unit_file
#   Where the unit is written.
class trigger::watch::etcd (
  String[1] $run_cmd = 'puppet agent --test',
  Trigger::Hostname $host = $facts['networking']['fqdn'],
  Optional[Trigger::Endpoints] $endpoints = undef,
  Optional[Trigger::Keyprefix] $keyprefix = undef,
  Enum['tsp', 'inline'] $queue = 'tsp',
  Optional[Trigger::Absolutepath] $trigger_bin = undef,
  Optional[Trigger::Absolutepath] $ts_socket = undef,
  Boolean $manage_package = true,
  String[1] $package_name = 'task-spooler',
  Optional[Boolean] $manage_unit = undef,
  Optional[Boolean] $manage_service = undef,
  Pattern[/\A[A-Za-z0-9_.@\-]+\z/] $service_name = 'trigger-watch',
  Trigger::Absolutepath $unit_file = "/etc/systemd/system/${service_name}.service",
) {
  include trigger::params

  # The unit quotes each word in double quotes; these would need escapes
  # that are easy to get wrong, and no sensible command needs them.
  if $run_cmd =~ /["\\\n\r]/ {
    fail("trigger::watch::etcd: run_cmd must not contain double quotes, backslashes or line breaks: '${run_cmd}'")
  }

  $systemd = $facts['service_provider'] == 'systemd' or $facts['trigger_systemd'] == true
  $_manage_unit = $manage_unit.lest || { $systemd }
  $_manage_service = $manage_service.lest || { $systemd }
  $_keyprefix = $keyprefix.lest || { $trigger::params::keyprefix }
  $_endpoints = $endpoints.lest || { $trigger::params::endpoints }
  $_trigger_bin = $trigger_bin.lest || { $trigger::params::trigger_bin }

  $endpoint_args = $_endpoints ? {
    undef   => [],
    default => ['--endpoints', [$_endpoints].flatten.join(',')],
  }
  $watch_args = [
    'watch',
    '--host', $host,
    '--run-cmd', $run_cmd,
    '--queue', $queue,
    '--prefix', $_keyprefix,
  ] + $endpoint_args

  if $manage_package and $queue == 'tsp' {
    package { $package_name:
      ensure => installed,
    }
  }

  if $_manage_unit {
    file { $unit_file:
      ensure  => file,
      owner   => 'root',
      group   => 'root',
      mode    => '0644',
      content => epp('trigger/trigger-watch.service.epp', {
          'host'        => $host,
          'trigger_bin' => $_trigger_bin,
          'args'        => $watch_args,
          'ts_socket'   => $ts_socket,
      }),
    }
  }

  if $_manage_service {
    # The unit file changed: systemd must reread it before the restart.
    exec { "systemctl daemon-reload for ${service_name}":
      command     => ['systemctl', 'daemon-reload'],
      path        => ['/usr/bin', '/bin', '/usr/sbin', '/sbin'],
      refreshonly => true,
    }
    service { $service_name:
      ensure => running,
      enable => true,
    }
    if $_manage_unit {
      File[$unit_file] ~> Exec["systemctl daemon-reload for ${service_name}"] ~> Service[$service_name]
    }
    if $manage_package and $queue == 'tsp' {
      Package[$package_name] -> Service[$service_name]
    }
  }
}
