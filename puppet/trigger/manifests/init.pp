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
# @param hosts
#   The hosts to run Puppet on: host names or FQDNs (letters, digits, '.',
#   '-', '_'), or `role:NAME` entries (reserved for role lookup).
# @param provider
#   `etcd` (write the inbox entries) or `dummy` (write nothing).
# @param ttl
#   The most hops a chain of triggers may take before a fire is refused.
# @param keyprefix
#   Where the inboxes live in etcd; default from trigger::params.
# @param endpoints
#   etcd client URLs; default from trigger::params, then ETCDCTL_ENDPOINTS.
# @param trigger_bin
#   The `trigger` command; default from trigger::params.
define trigger (
  Array[String, 1] $hosts,
  Trigger::Provider $provider = 'etcd',
  Integer[1, 100] $ttl = 5,
  Optional[Trigger::Keyprefix] $keyprefix = undef,
  Optional[Trigger::Endpoints] $endpoints = undef,
  Optional[Trigger::Absolutepath] $trigger_bin = undef,
) {
  include trigger::params

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

  $_keyprefix = $keyprefix.lest || { $trigger::params::keyprefix }
  $_endpoints = $endpoints.lest || { $trigger::params::endpoints }
  $_trigger_bin = $trigger_bin.lest || { $trigger::params::trigger_bin }
  $endpoint_args = $_endpoints ? {
    undef   => [],
    default => ['--endpoints', [$_endpoints].flatten.join(',')],
  }

  # An argv array: the title and host names never pass through a shell. `--`
  # ends the options, so a title starting with '-' is still just the name.
  # No `environment`: the fire must see TRIGGER_HOP/TRIGGER_CHAIN of a
  # triggered Puppet run.
  exec { "trigger fire ${title}":
    command     => [
      $_trigger_bin, 'fire',
      '--hosts', $hosts.unique.join(','),
      '--ttl', String($ttl),
      '--provider', $provider,
      '--prefix', $_keyprefix,
    ] + $endpoint_args + ['--', $title],
    refreshonly => true,
    logoutput   => true,
    cwd         => '/',
    timeout     => 120,
  }
}
