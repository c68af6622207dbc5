# The load balancer's configuration; its resources notify through the class.
class profile::lb::config {
  file { '/etc/haproxy-backends.cfg':
    content => "backends\n",
  }
  file { '/etc/haproxy-frontend.cfg':
    content => "frontend\n",
  }
}
