# @summary Other nodes that run Puppet when this resource is notified.
#
# Declaring a trigger does nothing. When another resource notifies it
# (`notify => Trigger['refresh load balancers']`), it runs
# `trigger fire NAME --hosts ...` once, which puts one entry into the inbox
# of every listed host; the watcher on each of those hosts
# (trigger::watch::etcd) then starts a Puppet run there.
#
# The fire runs with Puppet's own environment, so a Puppet run that was
# itself started by a trigger passes its hop count (TRIGGER_HOP,
# TRIGGER_CHAIN) on; a fire above `ttl` hops is refused and fails this
# resource, which stops notification loops.
#
# @example The seed's load balancer refresh
#   trigger { 'refresh load balancers':
#     hosts    => ['lb01.example.com', 'lb02.example.com'],
#     provider => 'etcd',
#   }
#
# @example A rolling refresh: one load balancer at a time, found by role
#   trigger { 'refresh load balancers':
#     hosts  => ['role:loadbalancer'],
#     serial => true,
#   }
#
# @example Through mcollective instead of etcd
#   trigger { 'refresh load balancers':
#     hosts    => ['lb01.example.com', 'lb02.example.com'],
#     provider => 'exec',
#     exec_cmd => 'mco puppet runonce -I {host}',
#   }
#
# @param hosts
#   The hosts to run Puppet on: host names or FQDNs (letters, digits, '.',
#   '-', '_'), or `role:NAME` entries: the live members of role NAME
#   (watchers with `trigger::role { NAME: }` or `roles => [NAME]`), looked up
#   in etcd when the trigger fires.
# @param provider
#   `etcd` (write the inbox entries), `dummy` (write nothing) or `exec`
#   (run `exec_cmd` for each host).
# @param ttl
#   The most hops a chain of triggers may take before a fire is refused.
# @param max_concurrent
#   At most this many of the hosts run Puppet at once (a slot semaphore in
#   etcd, held per run under a lease); 0 or unset: no limit.
# @param serial
#   One host at a time (`max_concurrent => 1`).
# @param exec_cmd
#   With provider `exec`: the command run once per host, split into words
#   like a shell would without running one, `{host}` replaced by the host in
#   each word, e.g. `mco puppet runonce -I {host}`. Required by `exec`, and
#   must contain `{host}`.
# @param run_noop
#   The hosts' runs add `--noop` (where their watcher allows it: by default
#   for `puppet agent`/`puppet apply`). A noop run serves only noop fires
#   with the same tags, never a normal fire; with `wait`, exit 2 reads
#   "would change". (Not `noop`: that is Puppet's metaparameter, and
#   `noop => true` on a trigger means what it means on any resource: it
#   does not fire at all.)
# @param tags
#   Puppet tags the hosts' runs add as `--tags` (where their watcher allows
#   it); a run serves only fires with the same tags.
# @param wait
#   Make this Puppet run wait until every host has finished a run that
#   started after the fire, log a table of the results, and fail this
#   resource when any host failed or did not finish within `wait_timeout`.
# @param wait_timeout
#   Seconds `wait` waits (with provider `exec`: for each host's command).
# @param ok_codes
#   Exit codes of the hosts' runs that count as success with `wait`; unset:
#   the command's default, 0 and 2 (`puppet agent --test`).
# @param keyprefix
#   Where the inboxes live in etcd; default from trigger::globals.
# @param endpoints
#   etcd client URLs; default from trigger::globals, then ETCDCTL_ENDPOINTS.
# @param cacert
#   CA certificate for etcd's TLS; default from trigger::globals.
# @param cert
#   Client certificate for etcd; default from trigger::globals.
# @param key
#   The client certificate's key; default from trigger::globals.
# @param user
#   etcd user `NAME` or `NAME:PASSWORD` (best as Sensitive); default from
#   trigger::globals. The name goes on the command line, the password into
#   the command's environment as ETCDCTL_PASSWORD (not into the process
#   list, logs or reports).
# @param trigger_bin
#   The `trigger` command; default from trigger::globals.
define trigger (
  Array[String, 1] $hosts,
  Trigger::Provider $provider = 'etcd',
  Integer[1, 100] $ttl = 5,
  Optional[Integer] $max_concurrent = undef,
  Boolean $serial = false,
  Optional[String] $exec_cmd = undef,
  Boolean $run_noop = false,
  Optional[Array[Pattern[/\A[A-Za-z0-9_][A-Za-z0-9_:.-]*\z/], 1, 32]] $tags = undef,
  Boolean $wait = false,
  Integer[1] $wait_timeout = 600,
  Optional[Array[Integer[0, 255], 1]] $ok_codes = undef,
  Optional[Trigger::Keyprefix] $keyprefix = undef,
  Optional[Trigger::Endpoints] $endpoints = undef,
  Optional[Trigger::Absolutepath] $cacert = undef,
  Optional[Trigger::Absolutepath] $cert = undef,
  Optional[Trigger::Absolutepath] $key = undef,
  Optional[Trigger::Etcduser] $user = undef,
  Optional[Trigger::Absolutepath] $trigger_bin = undef,
) {
  include trigger::globals

  # Checked here rather than by the parameter's type so that the message
  # says which entry is wrong and what is allowed.
  $hosts.each |Integer $index, String $host| {
    if $host == '' {
      fail("Trigger['${title}']: hosts entry ${index} is empty")
    }
    unless $host =~ Trigger::Target {
      fail(@("MESSAGE"/L))
        Trigger['${title}']: hosts entry ${index} ('${host}') is not a host name: \
        use letters, digits, '.', '-' and '_' only, or role:NAME
        |- MESSAGE
    }
  }
  if length($title) > 256 {
    fail("Trigger['${title}']: the name is longer than 256 characters")
  }

  if $max_concurrent =~ NotUndef and ($max_concurrent < 0 or $max_concurrent > 100000) {
    fail("Trigger['${title}']: max_concurrent must be from 0 (no limit) to 100000, got ${max_concurrent}")
  }
  if $serial and $max_concurrent =~ Integer and $max_concurrent > 1 {
    fail("Trigger['${title}']: serial => true means max_concurrent 1, but max_concurrent is ${max_concurrent}")
  }

  if $provider == 'exec' {
    if $exec_cmd =~ Undef or $exec_cmd.strip == '' {
      fail("Trigger['${title}']: provider 'exec' needs exec_cmd, e.g. 'mco puppet runonce -I {host}'")
    }
    unless '{host}' in $exec_cmd {
      fail("Trigger['${title}']: exec_cmd must name the host as {host}, e.g. 'mco puppet runonce -I {host}'; got '${exec_cmd}'")
    }
    if $exec_cmd =~ /[\r\n]/ {
      fail("Trigger['${title}']: exec_cmd must be one line")
    }
  } elsif $exec_cmd =~ NotUndef {
    fail("Trigger['${title}']: exec_cmd is only used with provider => 'exec' (provider is '${provider}')")
  }

  if $wait {
    # This host's own next run queues behind the one that is waiting: it
    # would wait for itself until the timeout.
    $self = [$facts.dig('networking', 'fqdn'), $trusted['certname']].filter |$name| { $name =~ NotUndef }
    $own = $hosts.filter |$host| { $host in $self }
    unless $own.empty {
      fail("Trigger['${title}']: wait => true with this host (${own[0]}) in hosts: its run would wait for itself")
    }
  }

  $_keyprefix = $keyprefix.lest || { $trigger::globals::keyprefix }
  $_trigger_bin = $trigger_bin.lest || { $trigger::globals::trigger_bin }
  [$user_name, $password] = trigger::split_user($user.lest || { $trigger::globals::user })
  $connection_args = trigger::connection_args("Trigger['${title}']", $endpoints, $cacert, $cert, $key)
  $user_args = $user_name.then |$name| { ['--user', $name] }.lest || { [] }
  $limit_args = $serial ? {
    true    => ['--serial'],
    default => $max_concurrent.then |$n| { ['--max-concurrent', String($n)] }.lest || { [] },
  }
  $exec_args = $exec_cmd.then |$cmd| { ['--exec-cmd', $cmd] }.lest || { [] }
  $option_args = ($run_noop ? { true => ['--noop'], default => [] }) + $tags.then |$t| { ['--tags', $t.join(',')] }.lest || { [] }
  $wait_args = $wait ? {
    true    => ['--wait', '--timeout', String($wait_timeout)] + $ok_codes.then |$codes| { ['--ok-codes', $codes.join(',')] }.lest || { [] },
    default => [],
  }

  # The kernel refuses any one argument over 128 KiB: 400 targets of at most
  # 257 characters (role:NAME) fit in one --hosts, so long lists take several.
  $host_args = $hosts.unique.slice(400).map |$group| { ['--hosts', $group.join(',')] }.flatten

  # An argv array: the title and host names never pass through a shell. `--`
  # ends the options, so a title starting with '-' is still just the name.
  # The fire inherits Puppet's environment (an exec's `environment` only
  # adds to it): it must see TRIGGER_HOP/TRIGGER_CHAIN of a triggered Puppet
  # run.
  $argv = [
    $_trigger_bin, 'fire',
  ] + $host_args + [
    '--ttl', String($ttl),
    '--provider', $provider,
    '--prefix', $_keyprefix,
  ] + $limit_args + $exec_args + $option_args + $wait_args + $connection_args + $user_args + ['--', $title]

  # The password stays off the command line, which `ps` shows and an
  # exec's failure message quotes.
  $environment = $password.then |$pw| { ["ETCDCTL_PASSWORD=${pw}"] }.lest || { [] }
  # --wait bounds the whole wait for the etcd provider; the exec provider
  # bounds each host's command, one host after another (0: no limit here).
  $timeout = $wait ? {
    true    => $provider ? { 'exec' => 0, default => $wait_timeout + 60 },
    default => 120,
  }

  exec { "trigger fire ${title}":
    command     => $argv,
    environment => $environment,
    refreshonly => true,
    logoutput   => true,
    cwd         => '/',
    timeout     => $timeout,
  }
}
