"""trigger: Puppet-native cross-node orchestration over etcd."""
