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
# The `trigger` command itself comes from `trigger::install` (or any
# virtualenv `trigger_bin` points at).
#
# @example A masterless node, as in the seed
#   class { 'trigger::watch::etcd':
#     run_cmd => 'puppet apply manifest.pp',
#   }
#
# @example A load balancer that also stands in an election
#   class { 'trigger::watch::etcd': roles => ['loadbalancer'] }
#   trigger::election { 'lb primary': }
#
# Roles and elections come from two places, merged by the watcher: `roles`
# and `elections` here (on its command line: changing them restarts it),
# and the file names in CONFIG_DIR/roles/ and CONFIG_DIR/elections/, which
# `trigger::role` and `trigger::election` write anywhere in the catalog and
# the watcher re-reads every few seconds without a restart.
#
# @param run_cmd
#   The command a triggered run executes, split into words the way a POSIX
#   shell would split them, without running a shell. It must not contain
#   double quotes, backslashes or line breaks.
# @param host
#   The host name whose inbox is watched: the name other nodes list in a
#   trigger's `hosts`.
# @param endpoints
#   etcd client URLs; default from trigger::globals, then the watcher's
#   ETCDCTL_ENDPOINTS, then http://127.0.0.1:2379.
# @param keyprefix
#   Where the inboxes live; default from trigger::globals.
# @param queue
#   `tsp` (task-spooler) or `inline` (the watcher runs `run_cmd` itself).
# @param trigger_bin
#   The `trigger` command; default from trigger::globals.
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
# @param roles
#   Roles of this node, for triggers with `hosts => ['role:NAME']`.
# @param elections
#   Elections this node stands in (see `trigger::election`).
# @param config_dir
#   Where the watcher reads more roles and elections (`--config-dir`);
#   default from trigger::globals (/etc/trigger). The class manages
#   CONFIG_DIR/roles and CONFIG_DIR/elections, purging files no resource of
#   the catalog declares, and writes CONFIG_DIR/client.conf (mode 0600) for
#   the `trigger_leaders` fact.
# @param member_ttl
#   Seconds after which a silent watcher loses its roles and elections
#   (`--member-ttl`); unset: the command's default (10).
# @param cacert
#   CA certificate for etcd's TLS; default from trigger::globals.
# @param cert
#   Client certificate for etcd; default from trigger::globals.
# @param key
#   The client certificate's key; default from trigger::globals.
# @param user
#   etcd user `NAME` or `NAME:PASSWORD` (best as Sensitive); default from
#   trigger::globals. The name goes on the command line; the password goes to
#   CONFIG_DIR/watch.env (mode 0600) as ETCDCTL_PASSWORD, which the unit
#   reads as its environment: it is in neither the world-readable unit file
#   nor the process list.
# @param metrics_port
#   Serve Prometheus metrics on this port (`--metrics-port`); unset: no
#   metrics endpoint.
# @param log_format
#   `text` or `json` lines in the watcher's log (`--log-format`); unset: the
#   command's default.
# @param run_options
#   What a fire may add to `run_cmd` (`--run-options`): `noop` (`--noop`),
#   `tags` (`--tags`); `[]`: nothing, a fire asking for either is refused and
#   runs nothing. Unset: both for `puppet agent`/`puppet apply`, else none.
class trigger::watch::etcd (
  String[1] $run_cmd,
  Enum['tsp', 'inline'] $queue,
  Boolean $manage_package,
  String[1] $package_name,
  Pattern[/\A[A-Za-z0-9_.@\-]+\z/] $service_name,
  Trigger::Hostname $host = $facts['networking']['fqdn'],
  Optional[Trigger::Endpoints] $endpoints = undef,
  Optional[Trigger::Keyprefix] $keyprefix = undef,
  Optional[Trigger::Absolutepath] $trigger_bin = undef,
  Optional[Trigger::Absolutepath] $ts_socket = undef,
  Optional[Boolean] $manage_unit = undef,
  Optional[Boolean] $manage_service = undef,
  Trigger::Absolutepath $unit_file = "/etc/systemd/system/${service_name}.service",
  Array[Trigger::Hostname] $roles = [],
  Array[String] $elections = [],
  Optional[Trigger::Absolutepath] $config_dir = undef,
  Optional[Integer[1, 3600]] $member_ttl = undef,
  Optional[Trigger::Absolutepath] $cacert = undef,
  Optional[Trigger::Absolutepath] $cert = undef,
  Optional[Trigger::Absolutepath] $key = undef,
  Optional[Trigger::Etcduser] $user = undef,
  Optional[Integer[1, 65535]] $metrics_port = undef,
  Optional[Enum['text', 'json']] $log_format = undef,
  Optional[Array[Enum['noop', 'tags']]] $run_options = undef,
) {
  include trigger::globals

  # The unit quotes each word in double quotes; these would need escapes
  # that are easy to get wrong, and no sensible command needs them.
  if $run_cmd =~ /["\\\n\r]/ {
    fail("trigger::watch::etcd: run_cmd must not contain double quotes, backslashes or line breaks: '${run_cmd}'")
  }

  $elections.each |$election| {
    unless $election =~ Trigger::Electionname {
      fail(@("MESSAGE"/L))
        trigger::watch::etcd: '${election}' is not a usable election name: \
        use ASCII letters, digits, spaces and _ . : @ + = - (starting and ending \
        with a letter, digit or _), at most 200 characters
        |- MESSAGE
    }
  }

  $systemd = $facts['service_provider'] == 'systemd' or $facts['trigger_systemd'] == true
  $_manage_unit = $manage_unit.lest || { $systemd }
  $_manage_service = $manage_service.lest || { $systemd }
  $_keyprefix = $keyprefix.lest || { $trigger::globals::keyprefix }
  $_endpoints = $endpoints.lest || { $trigger::globals::endpoints }
  $_trigger_bin = $trigger_bin.lest || { $trigger::globals::trigger_bin }
  $_config_dir = $config_dir.lest || { $trigger::globals::config_dir }
  [$user_name, $password] = trigger::split_user($user.lest || { $trigger::globals::user })
  $connection_args = trigger::connection_args('trigger::watch::etcd', $endpoints, $cacert, $cert, $key)

  $watch_args = [
    'watch',
    '--host', $host,
    '--run-cmd', $run_cmd,
    '--queue', $queue,
    '--prefix', $_keyprefix,
    '--config-dir', $_config_dir,
  ] + ($roles.empty ? { true => [], default => ['--roles', $roles.unique.join(',')] }
  ) + ($elections.empty ? { true => [], default => ['--elections', $elections.unique.join(',')] }
  ) + ($member_ttl ? { undef => [], default => ['--member-ttl', String($member_ttl)] }
  ) + ($metrics_port ? { undef => [], default => ['--metrics-port', String($metrics_port)] }
  ) + ($log_format ? { undef => [], default => ['--log-format', $log_format] }
  ) + ($run_options ? { undef => [], default => ['--run-options', $run_options.empty ? {
        true => 'none', default => $run_options.unique.join(',') }] }
  ) + $connection_args + ($user_name ? { undef => [], default => ['--user', $user_name] })

  unless defined(Trigger::Config_dir[$_config_dir]) {
    trigger::config_dir { $_config_dir: }
  }

  # The password is kept out of the unit file, which anyone may read, and
  # off the command line: the watcher reads it from its environment
  # (etcdctl's name, ETCDCTL_PASSWORD) and hands it to its runs the same way.
  $environment_file = "${_config_dir}/watch.env"
  $environment_file_ensure = $password ? { undef => 'absent', default => 'file' }
  file { $environment_file:
    ensure    => $environment_file_ensure,
    owner     => 'root',
    group     => 'root',
    mode      => '0600',
    content   => $password.then |$pw| {
      Sensitive("# Managed by Puppet (trigger::watch::etcd)\nETCDCTL_PASSWORD='${pw}'\n")
    },
    show_diff => false,
  }

  # How the trigger_leaders fact reaches etcd: the watcher's settings.
  $client_settings = {
    'trigger_bin' => $_trigger_bin,
    'prefix'      => $_keyprefix,
    'config_dir'  => $_config_dir,
    'user'        => $user_name,
    'password'    => $password,
  } + Hash($connection_args.slice(2).map |$pair| { [$pair[0][2, -1], $pair[1]] })
  $client_lines = $client_settings.filter |$k, $v| { $v =~ NotUndef }.map |$k, $v| { "${k}=${v}\n" }
  file { "${_config_dir}/client.conf":
    ensure    => file,
    owner     => 'root',
    group     => 'root',
    mode      => '0600',
    content   => Sensitive("# Managed by Puppet (trigger::watch::etcd): read by the trigger_leaders fact.\n${client_lines.join}"),
    show_diff => false,
  }

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
          'env_file'    => $password.then |$_| { $environment_file },
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
    File[$environment_file] ~> Service[$service_name]
    if $manage_package and $queue == 'tsp' {
      Package[$package_name] -> Service[$service_name]
    }
  }
}
