"""The exec provider's argv: the host filled in, nothing through a shell."""

import pytest

from trigger.fire import Lineage, LoopRefused
from trigger.providers import exec_argv, exec_fire
from trigger.records import BadRecord


def test_exec_argv_fills_in_the_host_in_every_argument():
    assert exec_argv("mco puppet runonce -I {host}", "lb1") == ["mco", "puppet", "runonce", "-I", "lb1"]
    assert exec_argv("ssh root@{host} 'puppet agent -t'", "lb1") == ["ssh", "root@lb1", "puppet agent -t"]


@pytest.mark.parametrize("template, message", [("", "empty"), ("mco puppet runonce", "{host}")])
def test_exec_argv_rejects_useless_templates(template, message):
    with pytest.raises(BadRecord, match=message):
        exec_argv(template, "lb1")


def test_exec_argv_rejects_hostile_hosts():
    with pytest.raises(BadRecord, match="bad host name"):
        exec_argv("ssh {host}", "x;reboot")


def test_exec_fire_refuses_loops_before_running_anything(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(LoopRefused, match="hop 3 > ttl 2"):
        exec_fire(f"touch {marker} {{host}}", "t", ["a"], Lineage(2, ("x", "y")), "z", ttl=2)
    assert not marker.exists()


def test_exec_fire_reports_exit_codes(tmp_path):
    results = exec_fire("sh -c 'exit 3' {host}", "t", ["a", "b"], Lineage(), "o", ttl=5)
    assert [(r.host, r.exit_code) for r in results] == [("a", 3), ("b", 3)]
