# The seed's vhost example (documentation: needs puppetlabs-apache).
#
# The load balancers discover web server vhosts themselves (from PuppetDB,
# say); a new vhost only has to tell them to run Puppet again.
trigger { 'refresh load balancers':
  hosts    => ['lb01.example.com', 'lb02.example.com'],
  provider => 'etcd',
}

apache::vhost { 'first.example.com':
  port    => 80,
  docroot => '/var/www/first',
  notify  => Trigger['refresh load balancers'],
}
