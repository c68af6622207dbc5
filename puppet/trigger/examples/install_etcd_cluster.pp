# Three etcd members from a static list of peers (no discovery URL).
# Apply the same manifest on all three nodes; each finds itself by name.
class { 'trigger::install::etcd':
  member_name => $facts['networking']['hostname'],
  peers       => {
    'etcd1' => 'http://10.0.0.11:2380',
    'etcd2' => 'http://10.0.0.12:2380',
    'etcd3' => 'http://10.0.0.13:2380',
  },
}
