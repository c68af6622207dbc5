# A masterless node: run `puppet apply` when a trigger fires for it.
class { 'trigger::watch::etcd':
  run_cmd => 'puppet apply /etc/puppet/code/environments/production/manifests/site.pp',
}
