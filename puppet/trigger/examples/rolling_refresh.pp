# Load balancers found by role and refreshed one at a time.
#
# On each load balancer (lb01, lb02): the watcher, and the role.
#   include trigger::watch::etcd
#   trigger::role { 'loadbalancer': }
#
# On a web server: a new vhost refreshes the live load balancers, never
# both at once, and this run waits for them and fails if one failed.
trigger { 'refresh load balancers':
  hosts        => ['role:loadbalancer'],
  serial       => true,
  wait         => true,
  wait_timeout => 900,
}

file { '/etc/nginx/sites-enabled/first.example.com':
  ensure  => file,
  content => "server { server_name first.example.com; }\n",
  notify  => Trigger['refresh load balancers'],
}
