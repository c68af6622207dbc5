# A load balancer: member of role lb; any change in its config class
# tells the monitoring node (a class-level notify).
class profile::lb {
  trigger::role { 'lb': }
  trigger { 'refresh monitoring':
    hosts => ['mon01.example.com'],
  }
  class { 'profile::lb::config':
    notify => Trigger['refresh monitoring'],
  }
}
