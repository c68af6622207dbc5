# A web node: its vhost reaches the load balancers through a `~>` chain
# (file ~> refreshonly exec ~> trigger), one load balancer at a time.
class profile::web (
  String $release = lookup('release'),
) {
  trigger { 'refresh load balancers':
    hosts  => ['role:lb'],
    serial => true,
  }
  file { '/etc/shop-vhost.conf':
    content => "release ${release}\n",
  }
  ~> exec { 'reload web':
    command     => '/bin/true',
    refreshonly => true,
  }
  ~> Trigger['refresh load balancers']
}
