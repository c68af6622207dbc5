# The monitoring node: receives the load balancers' refreshes, triggers nothing.
class profile::monitoring {
  file { '/etc/checks.cfg':
    content => "checks\n",
  }
}
