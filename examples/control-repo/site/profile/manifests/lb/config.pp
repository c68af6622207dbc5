# The load balancer's configuration; its resources notify through the class.
# The backends follow the node's release (hiera `release`), as the web nodes' vhosts do.
class profile::lb::config (
  String $release = lookup('release'),
) {
  file { '/etc/haproxy-backends.cfg':
    content => "backends ${release}\n",
  }
  file { '/etc/haproxy-frontend.cfg':
    content => "frontend\n",
  }
}
