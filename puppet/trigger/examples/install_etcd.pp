# A single-member etcd from the distribution's package, plus the watcher.
class { 'trigger::install::etcd': }

class { 'trigger::watch::etcd':
  endpoints => 'http://127.0.0.1:2379',
  require   => Class['trigger::install::etcd'],
}
