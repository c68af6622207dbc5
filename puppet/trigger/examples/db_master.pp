# An election from Puppet: db01 and db02 both stand in 'db master'; the
# oldest live candidate holds it, and the other takes over when the
# holder's watcher stops or loses etcd for longer than its member_ttl.
include trigger::watch::etcd
trigger::election { 'db master': }

# Masterless: the function asks etcd while this catalog compiles (undef
# while nobody holds it yet). With a Puppet server that cannot reach etcd,
# use $facts['trigger_leaders']['db master'] instead.
$master = trigger::leader('db master')
$role = $master ? {
  $facts['networking']['fqdn'] => 'primary',
  undef                        => 'undecided',
  default                      => 'replica',
}

notify { "this node is the database ${role} (master: ${master})": }
