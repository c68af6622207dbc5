# A trigger lab node: one member of a three-member etcd cluster with static
# peers, and the watcher, both from the project's module (puppet/trigger).
# A triggered run is a masterless `puppet apply` of
# /var/lib/trigger-lab/manifests; the first manifest there appends a line
# per run to /var/lib/trigger-lab/runs.log:
#
#   <start, epoch seconds> <TRIGGER_RUN_ID> <TRIGGER_HOP> <TRIGGER_CHAIN>
#
# Applied by `python -m lab converge` on namespaced nodes and by the
# Vagrantfile's provisioner on VMs, with the lab's facts in the environment:
#
#   FACTER_trigger_lab_nodes      node1=ADDRESS,node2=ADDRESS,node3=ADDRESS
#   FACTER_trigger_lab_wheel      a wheel of the checkout: trigger::install
#                                 installs it (lab/local), with
#   FACTER_trigger_lab_wheelhouse its dependencies as wheels (no index needed);
#   FACTER_trigger_lab_trigger    or else a `trigger` command in a virtualenv
#                                 made beforehand, linked (the Vagrantfile)
#   FACTER_trigger_lab_module     the project's module directory (puppet/trigger)
#   FACTER_trigger_lab_members    optional: the etcd members (node1,node2,node3); default every node
#   FACTER_trigger_lab_run_cmd    optional: the watcher's run command instead of `puppet apply`
#   FACTER_trigger_lab_watch_host optional: the host name the watcher serves (default the node's)
#
#   puppet apply --modulepath REPO/puppet REPO/lab/puppet/node.pp
#
# Where systemd is the init (the VMs) the module manages the services; in a
# namespace there is none, and the lab's node init starts the units the
# package and the module wrote (lab/local/nodeinit.py).

$lab_nodes = Hash($facts['trigger_lab_nodes'].split(',').map |$pair| { $pair.split('=') })
$me = $facts['networking']['hostname']
unless $me in $lab_nodes {
  fail("trigger lab: this node (${me}) is not one of ${lab_nodes.keys.join(', ')}")
}
# etcd members (fact trigger_lab_members, default: every node); the other
# nodes are clients of that cluster.
$members = $facts['trigger_lab_members'].then |$names| { $names.split(',') }.lest || { $lab_nodes.keys }
$member = $me in $members
$others = $members.sort.filter |$name| { $name != $me }
$endpoints = ($member ? { true => [$me], default => [] } + $others).map |$name| { "http://${lab_nodes[$name]}:2379" }
$systemd = $facts['trigger_systemd'] == true
$lab_dir = '/var/lib/trigger-lab'

class { 'trigger::globals':
  endpoints => $endpoints,
}

if $member {
  class { 'trigger::install::etcd':
    member_name    => $me,
    peers          => Hash($members.map |$name| { [$name, "http://${lab_nodes[$name]}:2380"] }),
    manage_service => $systemd,
    before         => Class['trigger::watch::etcd'],
  }
}

class { 'trigger::watch::etcd':
  # fact trigger_lab_watch_host: another fleet's name for this node (the
  # plan's lab comparison runs the control repo's nodes, web01.example.com...)
  host        => $facts['trigger_lab_watch_host'].lest || { $me },
  # fact trigger_lab_run_cmd: another run command (`trigger-sim --lab` runs a stand-in)
  run_cmd     => $facts['trigger_lab_run_cmd'].lest || { "puppet apply ${lab_dir}/manifests" },
  ts_socket   => '/run/trigger-tsp.socket',
  manage_unit => true,
  require     => File['/usr/local/bin/trigger'],
}

if $systemd and $member {
  # A member of a new cluster waits for its peers before it tells systemd it
  # is ready (Type=notify), so `systemctl start etcd` would block on node1
  # until node2 is up, and Vagrant provisions one VM after the other.
  file { '/etc/systemd/system/etcd.service.d':
    ensure => directory,
  }
  file { '/etc/systemd/system/etcd.service.d/trigger-lab.conf':
    ensure  => file,
    # Under emulation a commit takes about a second: etcd's default heartbeat
    # (100 ms) and election timeout (1 s) would have the members elect all day.
    content => @(DROPIN),
      # trigger lab (lab/puppet/node.pp): start without waiting for the other
      # members; timeouts for slow (emulated) nodes.
      [Service]
      Type=simple
      Environment=ETCD_HEARTBEAT_INTERVAL=500
      Environment=ETCD_ELECTION_TIMEOUT=5000
      | DROPIN
    notify  => Exec['trigger lab: systemctl daemon-reload'],
  }
  exec { 'trigger lab: systemctl daemon-reload':
    command     => ['systemctl', 'daemon-reload'],
    path        => ['/usr/bin', '/bin'],
    refreshonly => true,
    before      => Class['trigger::install::etcd'],
  }
}

# The `trigger` command where the module expects it (/usr/local/bin/trigger),
# and the module where a triggered `puppet apply` finds it.
if $facts['trigger_lab_wheel'] {
  class { 'trigger::install':
    source     => $facts['trigger_lab_wheel'],
    find_links => [$facts['trigger_lab_wheelhouse']],
    no_index   => true,
  }
} else {
  file { '/usr/local/bin/trigger':
    ensure => link,
    target => $facts['trigger_lab_trigger'],
  }
}

file { ['/etc/puppet/code', '/etc/puppet/code/modules']:
  ensure => directory,
}

file { '/etc/puppet/code/modules/trigger':
  ensure => link,
  target => $facts['trigger_lab_module'],
}

# Hiera gives every `trigger` resource on this node the lab's endpoints (its
# own member first), so a fire still gets through while one member is down.
file { '/etc/puppet/hiera.yaml':
  ensure  => file,
  content => @("HIERA"),
    # trigger lab (lab/puppet/node.pp)
    ---
    version: 5
    defaults:
      datadir: ${lab_dir}/hiera
      data_hash: yaml_data
    hierarchy:
      - name: trigger lab
        path: common.yaml
    | HIERA
}

file { [$lab_dir, "${lab_dir}/manifests", "${lab_dir}/hiera"]:
  ensure => directory,
}

$endpoint_lines = $endpoints.map |$url| { "  - '${url}'\n" }.join('')
file { "${lab_dir}/hiera/common.yaml":
  ensure  => file,
  content => "---\ntrigger::globals::endpoints:\n${endpoint_lines}",
}

file { "${lab_dir}/manifests/00-record-run.pp":
  ensure  => file,
  content => @(PP),
    # trigger lab: record every Puppet run of this node (lab/puppet/node.pp).
    exec { 'trigger lab: record this run':
      command  => 'echo "$(date +%s.%N) ${TRIGGER_RUN_ID:--} ${TRIGGER_HOP:-0} ${TRIGGER_CHAIN:--}" >> /var/lib/trigger-lab/runs.log',
      provider => shell,
    }
    | PP
}
