"""The users-and-roles layout (trigger.auth), without etcd."""

from __future__ import annotations

import pytest

from trigger.auth import FIRER_ROLE, Permission, node_role, plan
from trigger.layout import Layout
from trigger.records import BadRecord
from trigger.store.etcd import prefix_range_end

LAYOUT = Layout("/p")


def covers(permission: Permission, key: str, write: bool = False) -> bool:
    """Does an etcd permission cover `key` (as etcd checks a range)?"""
    if write and permission.kind == "read" or not write and permission.kind == "write":
        return False
    start = permission.key.encode()
    if permission.end:
        return start <= key.encode() < permission.end.encode()
    if not permission.prefix:
        return key == permission.key
    return start <= key.encode() < prefix_range_end(start)


def allowed(the_plan, user: str, key: str, write: bool = False) -> bool:
    return any(covers(p, key, write) for role in the_plan.users[user] for p in the_plan.roles[role])


def test_a_node_reaches_its_own_keys_only():
    the_plan = plan(LAYOUT, ["web1", "web10"], ["ci"])
    for key in ("/p/hosts/web1/0001-ab", "/p/hosts/web1/runs/r1", "/p/done/web1/r1", "/p/quarantine/web1/x",
                "/p/members/web1", "/p/slots/t/r1", "/p/elections/e/web1"):
        assert allowed(the_plan, "web1", key, write=True), key
    for key in ("/p/hosts/web10/0001-ab", "/p/hosts/web10/runs/r1", "/p/done/web10/r1", "/p/hosts/web1", "/p/members/web10",
                "/p/members/web1x", "/p/fires/0001", "/p/refused/0001", "/p/quarantine/web10/x"):
        assert not allowed(the_plan, "web1", key), key
        assert not allowed(the_plan, "web1", key, write=True), key


def test_a_firer_writes_inboxes_and_fire_records_and_reads_everything():
    the_plan = plan(LAYOUT, ["web1", "web2"], ["ci"])
    for key in ("/p/hosts/web1/0001-ab", "/p/hosts/web2/zzzz", "/p/hosts/web1/runs", "/p/hosts/web1/runs0",
                "/p/hosts/web1/runsx/1", "/p/hosts/web1/lock", "/p/hosts/web1/locks", "/p/fires/0001",
                "/p/refused/0001"):
        assert allowed(the_plan, "ci", key, write=True), key
    # Inboxes of the hosts set up only, never their run records nor their run lock.
    for key in ("/p/hosts/web1/runs/r1", "/p/hosts/web1/runs/", "/p/hosts/web1/lock/run",
                "/p/hosts/web10/0001", "/p/hosts/anyone/0001",
                "/p/hosts/web1", "/p/done/web1/r1", "/p/members/web1", "/p/quarantine/web1/x"):
        assert not allowed(the_plan, "ci", key, write=True), key
    assert allowed(the_plan, "ci", "/p/hosts/web1/runs/r1") and allowed(the_plan, "ci", "/p/done/web1/r1")
    assert allowed(the_plan, "ci", "/p/members/web1")
    assert not allowed(the_plan, "ci", "/other/key")


def test_hosts_set_up_later_are_open_to_the_firers_set_up_before():
    later = plan(LAYOUT, ["web3"])
    assert any(covers(p, "/p/hosts/web3/0001", write=True) for p in later.roles[FIRER_ROLE])
    assert "ci" not in later.users


def test_a_node_that_fires_gets_both_roles():
    the_plan = plan(LAYOUT, ["web1", "web2"], ["web1"])
    assert the_plan.users["web1"] == (node_role("web1"), FIRER_ROLE)
    assert the_plan.users["web2"] == (node_role("web2"),)


@pytest.mark.parametrize("hosts, firers, words", [
    ([], [], "nothing to set up"),
    (["root"], [], "etcd's root user"),
    (["a b"], [], "bad host"),
    (["web1"], ["$(id)"], "bad firer"),
])
def test_bad_names_are_refused(hosts, firers, words):
    with pytest.raises(BadRecord, match=words.replace("$", r"\$").replace("(", r"\(").replace(")", r"\)")):
        plan(LAYOUT, hosts, firers)
