# The seed's load balancer example (documentation: needs puppetlabs-haproxy).
#
# A web server adds itself to the load balancers' pool; the load balancers
# run Puppet and collect the new member.
trigger { 'refresh load balancers':
  hosts    => ['lb01.example.com', 'lb02.example.com'],
  provider => 'etcd',
}

haproxy::balancermember { 'haproxy':
  listening_service => 'webserver',
  ports             => '80',
  server_names      => $facts['networking']['hostname'],
  ipaddresses       => $facts['networking']['ip'],
  options           => 'check',
  notify            => Trigger['refresh load balancers'],
}
