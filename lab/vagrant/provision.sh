#!/bin/sh
# Converge one lab VM (the Vagrantfile's provisioner, as root): the lab's
# names in /etc/hosts, the `trigger` command, then the project's Puppet
# module through lab/puppet/node.pp. TRIGGER_LAB_NODES is
# node1=ADDRESS,node2=ADDRESS,node3=ADDRESS.
set -eu

# The lab's names on every node (Vagrant maps the node's own name to 127.0.1.1).
sed -i -E '/[[:space:]](node[0-9]+)([[:space:]]|$)/d' /etc/hosts
for pair in $(echo "$TRIGGER_LAB_NODES" | tr ',' ' '); do
  echo "${pair#*=} ${pair%%=*}" >> /etc/hosts
done

sh /vagrant/lab/vagrant/install-trigger.sh

export FACTER_trigger_lab_nodes="$TRIGGER_LAB_NODES"
export FACTER_trigger_lab_trigger=/opt/trigger/venv/bin/trigger
export FACTER_trigger_lab_module=/vagrant/puppet/trigger
status=0
puppet apply --detailed-exitcodes --color=false \
  --modulepath /vagrant/puppet /vagrant/lab/puppet/node.pp || status=$?
# 0: nothing changed, 2: changes applied; 4 and 6: failures
[ "$status" -eq 0 ] || [ "$status" -eq 2 ]
