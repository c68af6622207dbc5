"""Each node is what the lab promises: a name, an address, files of its own,
an etcd member of one static three-member cluster, a task-spooler server and
a watcher, all set up by the project's Puppet module."""

from __future__ import annotations

import json

import pytest

from lab.base import TS_SOCKET

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.tsp, pytest.mark.puppet, pytest.mark.slow]


def test_each_node_has_its_own_name_and_address(lab, hosts):
    for node, host in hosts.items():
        assert host.check_output("hostname") == node
        assert f"inet {lab.address(node)}/24" in host.check_output("ip -o -4 addr show")
        for other in lab.nodes:  # the nodes know each other by name
            assert host.check_output(f"getent hosts {other}").split()[0] == lab.address(other)


def test_each_node_keeps_its_files_to_itself(node1, node2):
    node1.run_test("echo node1 > /tmp/trigger-lab-private && echo node1 > /var/lib/trigger-lab/private")
    try:
        assert node1.file("/tmp/trigger-lab-private").content_string == "node1\n"
        assert not node2.file("/tmp/trigger-lab-private").exists
        assert not node2.file("/var/lib/trigger-lab/private").exists
    finally:
        node1.run("rm -f /tmp/trigger-lab-private /var/lib/trigger-lab/private")


def test_etcd_is_one_cluster_of_three_static_members(lab, hosts):
    members = json.loads(hosts["node1"].check_output("etcdctl member list -w json"))["members"]
    assert {m["name"]: m["peerURLs"] for m in members} == {
        node: [f"http://{lab.address(node)}:2380"] for node in lab.nodes}
    for node, host in hosts.items():
        settings = host.file("/etc/default/etcd").content_string  # written by trigger::install::etcd
        assert f'ETCD_NAME="{node}"' in settings
        assert "ETCD_INITIAL_CLUSTER=" in settings and "DISCOVERY" not in settings
        assert host.socket(f"tcp://{lab.address(node)}:2379").is_listening
        assert host.socket(f"tcp://{lab.address(node)}:2380").is_listening


def test_every_node_runs_a_watcher_and_a_task_spooler(lab, hosts):
    for node, host in hosts.items():
        unit = host.file("/etc/systemd/system/trigger-watch.service")  # trigger::watch::etcd
        assert unit.contains(f'"--host" "{node}"')
        watchers = [p for p in host.process.filter(user="root") if " watch --host " in p.args]
        assert len(watchers) == 1, f"{node}: watchers {[p.args for p in watchers]}"
        assert f"--host {node} " in watchers[0].args
        assert host.file(TS_SOCKET).is_socket
        assert host.run(f"TS_SOCKET={TS_SOCKET} tsp -l").rc == 0
