#!/bin/sh
# The master lab's server node, made ready to start (run as root inside the
# node by lab/local/master.py, once, before its services start):
#
#   server.sh AGENTS MODULE_DIR
#
# AGENTS: the agents' certnames, comma-separated (the CA signs only those);
# MODULE_DIR: the project's Puppet module (puppet/trigger).
#
# It writes Puppet Server's and PuppetDB's configuration, makes the lab's CA
# and the server's certificate with `puppetserver ca setup` (Ruby, not the
# JVM: 18 s here, so PuppetDB and Puppet Server can then start at once
# instead of PuppetDB waiting two minutes for the server to make the CA), and
# an empty PostgreSQL cluster that trusts local connections (nothing outside
# the node reaches it).
set -eu
agents=$1
module=$2
code=/etc/puppet/code/environments/production

cat > /etc/puppet/puppet.conf <<EOF
# trigger master lab (lab/local/server.sh)
[main]
certname = puppet
server = puppet
[server]
autosign = /etc/puppet/autosign.conf
storeconfigs = true
storeconfigs_backend = puppetdb
reports = puppetdb
EOF
# A whitelist, not a program: the lab's agents and nothing else.
echo "$agents" | tr , '\n' > /etc/puppet/autosign.conf
chmod 0644 /etc/puppet/autosign.conf
cat > /etc/puppet/puppetdb.conf <<EOF
[main]
server_urls = https://puppet:8081
soft_write_failure = false
EOF
cat > /etc/puppet/routes.yaml <<EOF
---
server:
  facts:
    terminus: puppetdb
    cache: yaml
EOF

puppetserver ca setup --certname puppet --subject-alt-names puppet,localhost >/dev/null
chown -R puppet:puppet /etc/puppet/puppetserver/ca /var/lib/puppet/ssl
install -d -o puppetdb -g puppetdb -m 0700 /etc/puppetdb/ssl
install -o puppetdb -m 0644 /var/lib/puppet/ssl/certs/ca.pem /etc/puppetdb/ssl/ca.pem
install -o puppetdb -m 0644 /var/lib/puppet/ssl/certs/puppet.pem /etc/puppetdb/ssl/cert.pem
install -o puppetdb -m 0600 /var/lib/puppet/ssl/private_keys/puppet.pem /etc/puppetdb/ssl/key.pem
cat > /etc/puppetdb/conf.d/database.ini <<EOF
[database]
subname = //127.0.0.1:5432/puppetdb
username = puppetdb
password = trust
EOF
cat > /etc/puppetdb/conf.d/jetty.ini <<EOF
[jetty]
host = 127.0.0.1
port = 8080
ssl-host = 0.0.0.0
ssl-port = 8081
ssl-key = /etc/puppetdb/ssl/key.pem
ssl-cert = /etc/puppetdb/ssl/cert.pem
ssl-ca-cert = /etc/puppetdb/ssl/ca.pem
EOF

# The code the agents get: the project's module, the lab's manifests
# directory (tests add files to it) and hiera data for the trigger resources.
install -d $code/manifests $code/modules $code/data
ln -sfn "$module" $code/modules/trigger
cat > $code/hiera.yaml <<EOF
---
version: 5
defaults:
  datadir: data
  data_hash: yaml_data
hierarchy:
  - name: trigger lab
    path: common.yaml
EOF
cat > $code/manifests/00-record-run.pp <<'EOF'
# trigger master lab: record every Puppet run of every agent (lab/local/server.sh).
exec { 'trigger lab: record this run':
  command  => 'echo "$(date +%s.%N) ${TRIGGER_RUN_ID:--} ${TRIGGER_HOP:-0} ${TRIGGER_CHAIN:--}" >> /var/lib/trigger-lab/runs.log',
  provider => shell,
}
EOF

install -d -o postgres -g postgres /run/postgresql /var/lib/postgresql/trigger-lab
install -d -o puppet -g puppet /run/puppetserver
install -d -o puppetdb -g puppetdb /run/puppetdb
su postgres -s /bin/sh -c "/usr/lib/postgresql/15/bin/initdb -D /var/lib/postgresql/trigger-lab \
  -A trust -U postgres -E UTF8 --locale=C.UTF-8" >/dev/null
