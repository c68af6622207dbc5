"""Shown on real Puppet: the control repo, compiled by real Puppet and planned by
`trigger-sim plan`, gives per node the counts the plan's simulation predicts
when it converges on the local lab with real Puppet and one release is made.

The whole fleet: a lab of eight nodes of its own, whose watchers serve the
control repo's names and run `puppet apply` of it as that node
(simulator/plan/lab_apply.py). The release sets hiera `release` on the nodes
`*01.example.com`, which is what `--changes release@60:*01.example.com`
tells the plan: the loop (app01 <-> app02) goes round until its ttl refuses
it, web01's `~>` chain refreshes the role:lb targets one at a time, lb01's
class-level notify refreshes mon01.

And the same real-Puppet path on one node of the session's lab, in seconds:
the control repo applied as app01 fires through the module into etcd, and a
run past the ttl is refused.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from lab.local import claimed_lab
from simulator.lab_replay import compare, render, sim_table
from simulator.plan.analysis import analyse
from simulator.plan.compile import CompileOptions, compile_catalogs
from simulator.plan.importers import load_catalogs
from simulator.plan.lab import ControlRepoRelease, run_command, watch_hosts
from simulator.plan.lab_apply import puppet_argv
from simulator.plan.scenario_writer import Assumptions, build_scenario, parse_changes
from simulator.races import outcome_ranges
from simulator.scenario import parse_scenario
from tests.conftest import need
from tests.integration.lab.conftest import _need_backend, fresh_lab
from trigger.layout import Layout

pytestmark = [pytest.mark.root, pytest.mark.etcd, pytest.mark.tsp, pytest.mark.puppet, pytest.mark.slow,
              pytest.mark.backend("local")]

ROOT = Path(__file__).resolve().parents[3]
REPO = ROOT / "examples" / "control-repo"
MODULES = str(ROOT / "puppet")
RELEASE = "release@60:*01.example.com"
# Real runs here: 2-9 s of CPU each on 2 shared cores (lab/README.md has the measured spread).
DURATION = "4-15"
# Real seconds within which two events may land in either order on the lab:
# a hop's process start-ups on a loaded machine, and the spread of Puppet's run times.
WINDOW = 5.0
FIRES, REFUSED = Layout().fires_prefix(), f"{Layout().prefix}/refused/"


def control_repo_plan():
    need("ruby", "ruby")
    options = CompileOptions(REPO / "manifests" / "site.pp", REPO / "facts", f"{REPO / 'site'}:{MODULES}",
                             REPO / "hiera.yaml")
    compiled = list(compile_catalogs(options))
    assert [n for n, c in compiled if isinstance(c, str)] == []
    return analyse(load_catalogs(compiled).catalogs)


@pytest.fixture(scope="module")
def planned():
    plan = control_repo_plan()
    assert [(lp.hosts, lp.ttl) for lp in plan.loops] == [(("app01.example.com", "app02.example.com"), 3)]
    # No scheduled agent run in the window: the lab plays the release only.
    assume = Assumptions(changes=parse_changes(RELEASE), interval=10 ** 6, splay=10 ** 6, duration=DURATION,
                         until=600, drain=600)
    return plan, parse_scenario(build_scenario(plan, assume, "control-repo"), "control-repo")


@pytest.fixture(scope="module")
def puppet_lab(planned):
    _need_backend("local")
    _plan, scenario = planned
    with fresh_lab(claimed_lab("real", nodes=len(scenario.nodes)), "real-Puppet",
                   lambda lab: lab.converge(run_cmd=run_command(lab), watch_hosts=watch_hosts(scenario))) as lab:
        yield lab


def test_a_release_of_the_control_repo_on_real_puppet_matches_its_plan(planned, puppet_lab):
    from rich.console import Console

    plan, scenario = planned
    outcomes = outcome_ranges(scenario, orders=8, window=WINDOW)
    # No count of this release turns on a race within the window (a wider one, 10 s, lets
    # web01's fire join lb01's queued release run): the lab's counts must equal the plan's.
    assert outcomes.moved() == {}
    simulated = sim_table(outcomes.base)
    player = ControlRepoRelease(puppet_lab, scenario, REPO, MODULES, plan.roles)
    on_lab = player.run()
    notes: list[str] = []
    problems = compare(simulated, on_lab, None, outcomes, notes)
    console = Console(width=200, record=True)
    render(console, f"control-repo, {RELEASE}, real Puppet", scenario, simulated, on_lab, problems, None,
           (*player.notes(), *notes))
    assert problems == [], console.export_text()
    rows = on_lab[0]
    # what the release had to show, whatever the plan said: the loop stopped by its ttl,
    # the serial refresh of both load balancers, the class-level notify reaching mon01
    assert rows["app01.example.com"]["fires_refused"] + rows["app02.example.com"]["fires_refused"] > 0
    assert rows["lb02.example.com"]["runs_triggered"] > 0 and rows["mon01.example.com"]["fires_received"] > 1
    assert on_lab[1] == {"refresh load balancers": 1}


# -- one node, real Puppet, real etcd ----------------------------------------------------


def _etcd_records(lab, prefix: str) -> dict[str, dict]:
    done = lab.run("node1", ["etcdctl", "get", "--prefix", "-w", "json", prefix], check=True)
    kvs = json.loads(done.stdout or "{}").get("kvs", [])
    return {base64.b64decode(kv["key"]).decode(): json.loads(base64.b64decode(kv["value"])) for kv in kvs}


def test_the_control_repo_applied_as_app01_fires_through_the_module_and_its_ttl_refuses(lab):
    part = {"certname": "app01.example.com", "repo": str(REPO), "modulepath": f"{REPO / 'site'}:{MODULES}"}
    trigger = "poke app02.example.com"
    env = {"TRIGGER_HOST": "app01.example.com"}
    try:
        # An untriggered run: the exec (no refreshonly) changes, so the trigger fires at hop 1.
        first = lab.run("node3", puppet_argv(part), env=env, timeout=300)
        assert first.returncode == 2, first.stdout + first.stderr
        fires = [f for f in _etcd_records(lab, FIRES).values() if f.get("trigger") == trigger]
        assert [(f["hosts"], f["hop"], f["origin"]) for f in fires] == [(["app02.example.com"], 1, "app01.example.com")]
        # A run at hop 3 of the loop: its fire would be hop 4 > ttl 3, refused and recorded;
        # the module's exec fails: Puppet's exit 6 (the cache exec changed, the fire failed).
        looped = lab.run("node3", puppet_argv(part), env={**env, "TRIGGER_HOP": "3",
                                                           "TRIGGER_CHAIN": "app01.example.com,app02.example.com"},
                         timeout=300)
        assert looped.returncode == 6, looped.stdout + looped.stderr
        assert "loop refused" in looped.stdout + looped.stderr
        refused = [r for r in _etcd_records(lab, REFUSED).values() if r.get("trigger") == trigger]
        assert [(r["hop"], r["ttl"], r["chain"]) for r in refused] == \
            [(4, 3, ["app01.example.com", "app02.example.com", "app01.example.com"])]
    finally:
        # Nobody serves app02.example.com here: its inbox and this test's records go.
        lab.run("node3", ["trigger", "drop", "--host", "app02.example.com"])
        for prefix in (FIRES, REFUSED):
            for key, record in _etcd_records(lab, prefix).items():
                if record.get("trigger") == trigger:
                    lab.run("node1", ["etcdctl", "del", key])
