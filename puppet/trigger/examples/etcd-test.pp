# The seed's example (tests/etcd-test.pp of the original module): an exec that
# notifies a trigger, so lb01 and lb02 each run Puppet once.
#
#   puppet apply --modulepath /path/to/puppet examples/etcd-test.pp
#
# Unlike the seed, the exec has `creates`: it runs (and fires the trigger)
# only while /tmp/foo is missing, so a second apply changes nothing and fires
# nothing.
trigger { 'refresh load balancers':
  hosts    => ['lb01.example.com', 'lb02.example.com'],
  provider => 'etcd',
  tag      => ['staging', 'lb', 'puppetlabs.com'],
}

exec { '/usr/bin/touch /tmp/foo':
  creates => '/tmp/foo',
  notify  => Trigger['refresh load balancers'],
}
