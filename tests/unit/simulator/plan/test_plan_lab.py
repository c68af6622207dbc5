"""The parts of the plan's real-Puppet lab comparison that need no lab: the release's hiera
change, the names the watchers serve, the input check, and the `puppet apply` a node runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.local import LocalLab
from simulator.lab_replay import LabInputError
from simulator.plan.lab import ControlRepoRelease, release_data, run_command, watch_hosts
from simulator.plan.lab_apply import puppet_argv
from simulator.scenario import parse_scenario
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[4]
REPO = ROOT / "examples" / "control-repo"


def scenario(fires):
    return parse_scenario({"name": "s", "until": 100, "nodes": {"web01.example.com": "web", "lb01.example.com": "lb"},
                           "roles": {"web": {}, "lb": {}},
                           "triggers": {"release": {"hosts": ["web01.example.com"]}},
                           "fires": fires}, "s")


def test_the_release_sets_one_key_and_keeps_the_rest():
    assert yaml.safe_load(release_data("---\nprofile::app::peer: app02.example.com\n", "r2")) == \
        {"profile::app::peer": "app02.example.com", "release": "r2"}
    assert yaml.safe_load(release_data(None, "r2")) == {"release": "r2"}
    assert yaml.safe_load(release_data("---\n", "r2")) == {"release": "r2"}
    with pytest.raises(LabInputError, match="hiera data must be a mapping, got list"):
        release_data("- a\n", "r2")


def test_lab_nodes_serve_the_fleets_names_in_order(tmp_path):
    s = scenario([{"at": 60, "trigger": "release"}])
    assert watch_hosts(s) == {"node1": "web01.example.com", "node2": "lb01.example.com"}  # the scenario's order
    lab = LocalLab(name="unit", root=tmp_path, nodes=3)
    assert run_command(lab).endswith(f"simulator/plan/lab_apply.py {tmp_path}/unit/puppet-apply")


def test_a_scenario_that_is_not_one_release_is_refused_in_one_line(tmp_path):
    lab = LocalLab(name="unit", root=tmp_path, nodes=3)
    with pytest.raises(LabInputError, match=r"^s: a release is one operator fire .* not 0 fire\(s\)$"):
        ControlRepoRelease(lab, scenario([]), REPO, str(ROOT / "puppet"), {})
    two = scenario([{"at": 60, "trigger": "release"}, {"at": 90, "trigger": "release"}])
    with pytest.raises(LabInputError, match=r"not 2 fire\(s\)$"):
        ControlRepoRelease(lab, two, REPO, str(ROOT / "puppet"), {})


@pytest.mark.puppet
def test_the_nodes_puppet_apply_compiles_the_repo_as_that_node_with_its_facts(tmp_path):
    """The argv lab_apply.py runs, in noop and with a Puppet directory of its own: the catalog
    of lb01 (its class-level notify would fire), from the repo's facts, not this machine's."""
    need("puppet", "puppet")
    argv = puppet_argv({"certname": "lb01.example.com", "repo": str(REPO),
                        "modulepath": f"{REPO / 'site'}:{ROOT / 'puppet'}"})
    own = ["--noop", "--confdir", str(tmp_path / "conf"), "--vardir", str(tmp_path / "var"),
           "--codedir", str(tmp_path / "code")]
    done = subprocess.run([*argv[:2], *own, *argv[2:]], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Compiled catalog for lb01.example.com" in done.stdout
    assert "File[/etc/haproxy-backends.cfg]" in done.stdout
    assert "Exec[trigger fire refresh monitoring]: Would have triggered 'refresh'" in done.stdout


def test_lab_apply_without_its_node_file_says_which_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "simulator" / "plan" / "lab_apply.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and str(tmp_path) in done.stderr and ".json" in done.stderr
