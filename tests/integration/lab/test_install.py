"""`trigger::install` on the lab's nodes: each node runs the `trigger`
command the module installed from a wheel of this checkout (lab/local
converges with it), and the seed's example applies there unchanged with no
Hiera and no etcd settings at all."""

from __future__ import annotations

import re

import pytest

from trigger.layout import Layout

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.puppet, pytest.mark.slow]

VENV = "/usr/local/lib/trigger"  # trigger::install's default venv_dir


@pytest.mark.backend("local")  # the Vagrant lab links a virtualenv made by its provisioner
def test_each_node_runs_trigger_from_the_virtualenv_trigger_install_made(lab, hosts):
    for node, host in hosts.items():
        link = host.file("/usr/local/bin/trigger")
        assert link.is_symlink and link.linked_to == f"{VENV}/bin/trigger", node
        where = host.check_output(f"{VENV}/bin/python -c 'import trigger; print(trigger.__file__)'")
        assert where.startswith(f"{VENV}/lib/"), f"{node}: {where}"  # not the checkout
        assert host.file(f"{VENV}/.trigger-install").content_string.startswith(str(lab.dir / "wheels"))
        watchers = [p for p in host.process.filter(user="root") if " watch --host " in p.args]
        assert len(watchers) == 1 and watchers[0].args.startswith(f"{VENV}/bin/python"), node


@pytest.mark.backend("local")  # where lab/local installed trigger with trigger::install
def test_the_seed_example_applies_unchanged_with_no_hiera(lab, node1):
    example = "/etc/puppet/code/modules/trigger/examples/etcd-test.pp"  # the module, as linked
    layout = Layout("/puppet_trigger/events")
    no_hiera = "/tmp/no-hiera.yaml"
    node1.run_test(f"printf -- '---\\nversion: 5\\nhierarchy: []\\n' > {no_hiera}")
    event_id = None
    try:
        # No Hiera, no ETCDCTL_ENDPOINTS: every default of the module and
        # the command (/usr/local/bin/trigger, etcd on 127.0.0.1:2379).
        result = node1.run(f"env -u ETCDCTL_ENDPOINTS puppet apply --color=false --detailed-exitcodes "
                           f"--hiera_config {no_hiera} {example}")
        assert result.rc == 2, result.stdout + result.stderr
        ids = re.findall(r"returns: ([0-9a-f]{16}-[0-9a-f]{8})$", result.stdout, re.MULTILINE)
        assert len(ids) == 1, result.stdout  # one fire, its id logged by the trigger's exec
        event_id = ids[0]
        for host in ("lb01.example.com", "lb02.example.com"):
            keys = node1.check_output(f"etcdctl get --prefix --keys-only {layout.host_prefix(host)}").split()
            assert keys == [layout.entry_key(host, event_id)]
        again = node1.run(f"env -u ETCDCTL_ENDPOINTS puppet apply --color=false --detailed-exitcodes "
                          f"--hiera_config {no_hiera} {example}")
        assert again.rc == 0, again.stdout + again.stderr
    finally:
        # The inboxes of hosts the lab does not have, and the fire's record.
        for host in ("lb01.example.com", "lb02.example.com"):
            node1.run(f"etcdctl del --prefix {layout.host_prefix(host)}")
        if event_id:
            node1.run(f"etcdctl del {layout.fire_key(event_id)}")
        node1.run(f"rm -f /tmp/foo {no_hiera}")
