# @summary A minimal etcd from the distribution's package (Debian etcd-server).
#
# One member by default; with `peers`, one member of a cluster given by a
# static list (no discovery URL: the public discovery service is out of reach
# of an offline lab). The settings go to /etc/default/etcd, which the Debian
# unit reads as its environment.
#
# The data lives in `data_dir` (default /var/lib/etcd/trigger), not in the
# package's /var/lib/etcd/default: the package starts etcd with its own
# settings as soon as it is installed, and etcd ignores the initial cluster
# settings once a data directory has been initialized. A fresh directory makes
# the settings here take effect on the first restart.
#
# @example One member, clients on loopback and on the node's address
#   include trigger::install::etcd
#
# @example Three members; apply the same manifest on each node
#   class { 'trigger::install::etcd':
#     peers => { 'etcd1' => 'http://10.0.0.11:2380', 'etcd2' => 'http://10.0.0.12:2380',
#                'etcd3' => 'http://10.0.0.13:2380' },
#   }
#
# @param member_name
#   This member's name; with `peers` it must be one of their names.
# @param peers
#   Member name => peer URL for every member of the cluster. Empty: a single
#   member cluster.
# @param address
#   The address this member advertises when no URL below is given.
# @param peer_url
#   This member's peer URL; default `peers[member_name]`, else
#   http://ADDRESS:2380.
# @param client_urls
#   The client URLs this member advertises; default http://HOST:2379 with the
#   host of `peer_url`.
# @param listen_client_urls
#   Default `client_urls` plus http://127.0.0.1:2379.
# @param listen_peer_urls
#   Default `[peer_url]`.
# @param data_dir
#   Where etcd keeps its data (created, owned by `user`, mode 0700).
# @param initial_cluster_state
#   `new` to bootstrap; `existing` to join a running cluster.
# @param initial_cluster_token
#   Tells clusters bootstrapped from the same peer list apart.
# @param package_name
#   The package with the etcd server.
# @param manage_package
#   Install the package.
# @param manage_service
#   Keep the service running and restart it when the settings change; false
#   where no init system runs (a container).
# @param service_name
#   The etcd service.
# @param config_file
#   The environment file the service reads.
# @param user
#   The user etcd runs as (created by the package).
class trigger::install::etcd (
  Trigger::Absolutepath $data_dir,
  String[1] $package_name,
  Boolean $manage_package,
  Boolean $manage_service,
  String[1] $service_name,
  Trigger::Absolutepath $config_file,
  String[1] $user,
  Trigger::Hostname $member_name = $facts['networking']['hostname'],
  Hash[Trigger::Hostname, Trigger::Endpoint] $peers = {},
  String[1] $address = $facts.dig('networking', 'ip').lest || { '127.0.0.1' },
  Optional[Trigger::Endpoint] $peer_url = undef,
  Optional[Array[Trigger::Endpoint, 1]] $client_urls = undef,
  Optional[Array[Trigger::Endpoint, 1]] $listen_client_urls = undef,
  Optional[Array[Trigger::Endpoint, 1]] $listen_peer_urls = undef,
  Enum['new', 'existing'] $initial_cluster_state = 'new',
  Pattern[/\A[A-Za-z0-9_.\-]+\z/] $initial_cluster_token = 'trigger',
) {
  if !$peers.empty and !($member_name in $peers) {
    fail("trigger::install::etcd: member_name '${member_name}' is not one of the peers (${peers.keys.sort.join(', ')})")
  }

  $_peer_url = $peer_url.lest || { $peers[$member_name].lest || { "http://${address}:2380" } }
  $peer_host = $_peer_url.match(/\Ahttps?:\/\/([^\/]+):[0-9]+\/?\z/).then |$m| { $m[1] }.lest || {
    fail("trigger::install::etcd: peer URL '${_peer_url}' has no port")
  }
  $_client_urls = $client_urls.lest || { ["http://${peer_host}:2379"] }
  $_listen_client_urls = $listen_client_urls.lest || { ($_client_urls + ['http://127.0.0.1:2379']).unique }
  $_listen_peer_urls = $listen_peer_urls.lest || { [$_peer_url] }
  $initial_cluster = $peers.empty ? {
    true    => "${member_name}=${_peer_url}",
    default => $peers.keys.sort.map |$name| { "${name}=${peers[$name]}" }.join(','),
  }

  if $manage_package {
    package { $package_name:
      ensure => installed,
      before => [File[$data_dir], File[$config_file]],
    }
  }

  file { $data_dir:
    ensure => directory,
    owner  => $user,
    group  => $user,
    mode   => '0700',
  }

  file { $config_file:
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('trigger/etcd.default.epp', {
        'member_name'           => $member_name,
        'data_dir'              => $data_dir,
        'listen_client_urls'    => $_listen_client_urls,
        'client_urls'           => $_client_urls,
        'listen_peer_urls'      => $_listen_peer_urls,
        'peer_url'              => $_peer_url,
        'initial_cluster'       => $initial_cluster,
        'initial_cluster_state' => $initial_cluster_state,
        'initial_cluster_token' => $initial_cluster_token,
    }),
  }

  if $manage_service {
    service { $service_name:
      ensure    => running,
      enable    => true,
      subscribe => [File[$config_file], File[$data_dir]],
    }
  }
}
