"""Concurrency limits and discovery on simulated time (issue 7).

Limits are checked from the recorded Puppet run intervals (`Simulation.run_spans`,
what the timeline draws), not from the simulator's own slot bookkeeping; role
targeting is checked from the inbox entries each fire wrote (`Simulation.fired`).
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator import SCENARIOS, run_scenario
from simulator.report import build_report, max_running
from simulator.scenario import ScenarioError, load_scenario
from simulator.simulation import Simulation

SETTINGS = settings(max_examples=int(__import__("os").environ.get("SIM_EXAMPLES", "40")),
                    deadline=None, suppress_health_check=[HealthCheck.too_slow])


def simulate(data, seed: int = 1) -> Simulation:
    scenario = data if not isinstance(data, dict) else load_scenario(data)
    return Simulation(scenario, seed=seed, trace=True).run()


def triggered_spans(sim: Simulation, hosts) -> list[tuple[float, float, str]]:
    """(start, end, host) of every triggered Puppet run on these hosts."""
    names = list(sim.nodes)
    wanted = set(hosts)
    return sorted((start, end, names[i]) for i, start, end, triggered in sim.ledger.run_spans
                  if triggered and names[i] in wanted)


def most_at_once(spans) -> int:
    """Brute force: the most runs in progress at any run's start (touching ends do not overlap)."""
    return max((sum(1 for s, e, *_ in spans if s <= start < e) for start, *_ in spans), default=0)


def assert_every_fire_served(sim: Simulation, report) -> None:
    assert report.data["unserved"] == [], report.data["unserved"]
    missing = [key for key in sim.ledger.fired if key not in sim.ledger.served_by]
    assert missing == []
    for key, fired_at in sim.ledger.fired.items():
        assert sim.ledger.served_by[key][1] >= fired_at  # a run that started after the fire


def storm(hosts: int, limit: int, webs: int = 20, **trigger) -> dict:
    """`webs` web nodes notify one trigger on `hosts` app nodes within a minute."""
    return {
        "name": "limit",
        "until": 600,
        "agent": {"interval": 3600, "splay": 600, "duration": {"uniform": [20, 40]}},
        "nodes": {f"web[01:{webs:02d}]": "web", f"app[1:{hosts}]": "app"},
        "roles": {
            "web": {"agent": {"splay": 60},
                    "resources": {"vhost": {"changes": "once", "notify": ["refresh"]}}},
            "app": {"agent": {"splay": 600, "duration": {"uniform": [10, 20]}},
                    "resources": {"cfg": {"changes": "until_converged", "collects": ["vhost"]}}},
        },
        "triggers": {"refresh": {"hosts": "role:app", "max_concurrent": limit, **trigger}},
    }


# -- concurrency limits ---------------------------------------------------------------


def test_rolling_refresh_of_two_load_balancers_never_runs_both_at_once():
    sim = simulate(load_scenario(SCENARIOS / "rolling.yaml"))
    report = build_report(sim)
    lbs = [h for h, role in sim.scenario.nodes if role == "lb"]
    spans = triggered_spans(sim, lbs)
    # the first fire starts lb01; lb02 waits for its slot and takes the rest of
    # the storm in one run; lb01 then runs again for what came during its run
    assert [host for _, _, host in spans] == [lbs[0], lbs[1], lbs[0]]
    for (s1, e1, h1), (s2, e2, h2) in pairwise(spans):
        assert e1 <= s2, f"{h1} ran {s1:g}-{e1:g} and {h2} started at {s2:g}"
    limit = next(x for x in report.data["limits"] if x["trigger"] == "refresh load balancers")
    assert (limit["max_concurrent"], limit["max_running"], limit["exceeded"]) == (1, 1, False)
    assert limit["runs"] == len(spans) and limit["slot_waits"] == len(spans)
    assert limit["slot_waited"]["max"] > 0  # the second LB did wait for the first
    assert report.ok
    assert_every_fire_served(sim, report)


def test_a_limit_of_two_over_five_hosts_is_never_exceeded_under_a_storm():
    sim = simulate(storm(hosts=5, limit=2))
    report = build_report(sim)
    spans = triggered_spans(sim, [f"app{i}" for i in range(1, 6)])
    assert len({h for _, _, h in spans}) == 5
    assert most_at_once(spans) == 2  # the limit was reached, and held
    assert max_running(spans)[0] == 2
    assert report.data["limits"][0]["max_running"] == 2
    assert report.data["totals"]["fires_received"] == 20 * 5
    assert report.ok, report.data["check"]
    assert_every_fire_served(sim, report)


def test_without_a_limit_the_same_storm_runs_more_at_once():
    """The control: the limit, not the scenario's timing, keeps runs apart."""
    sim = simulate(storm(hosts=5, limit=0))
    assert most_at_once(triggered_spans(sim, [f"app{i}" for i in range(1, 6)])) > 2
    assert build_report(sim).data["limits"] == []


def test_serial_is_a_limit_of_one_and_slot_keys_go_with_their_runs():
    sim = simulate(storm(hosts=3, limit=0, webs=6, serial=True))
    assert most_at_once(triggered_spans(sim, ["app1", "app2", "app3"])) == 1
    items, _ = sim.etcd.store.get_prefix(sim.layout.prefix + "/slots/")
    assert items == []  # every slot was released (its lease revoked)
    report = build_report(sim)
    assert report.data["limits"][0]["max_concurrent"] == 1 and report.ok


def test_a_holder_cut_off_from_etcd_stops_before_its_lease_ends_and_serves_again_later():
    """A slot lives as long as its lease, so a run that cannot renew its
    lease stops its command first (issue 12: `--serial` once ran two at once).

    app1 holds the only slot through a 100 s run and is cut off from etcd at
    12 s. Its last renewal was at the start (10.002): it stops its command
    `stop_after` = 27 s later, before the 30 s lease can end at 40.002; app2
    takes the slot only then. app1's fire goes back to its inbox and is
    served by a run after the cut ends, so the check passes.
    """
    data = storm(hosts=2, limit=1, webs=1)
    data["roles"]["app"]["agent"] = {"splay": 600, "duration": 100}
    data["faults"] = [{"at": 12, "kind": "cut_off", "hosts": "app1", "for": 50}]
    data["fires"] = [{"at": 10, "trigger": "refresh"}]
    data["roles"]["web"]["resources"]["vhost"]["changes"] = "never"
    sim = simulate(data)
    spans = triggered_spans(sim, ["app1", "app2"])
    assert [(round(a, 3), round(b, 3), h) for a, b, h in spans] == [
        (10.002, 37.002, "app1"),  # stopped: 10.002 + 27
        (40.002, 140.002, "app2"),  # the lease of app1's run ended at 40.002
        (140.004, 240.004, "app1"),  # the fire given back, served once the slot was free
    ]
    assert most_at_once(spans) == 1
    assert build_report(sim).ok


# -- discovery ------------------------------------------------------------------------------


def role_spec(ttl: int = 10) -> dict:
    return {
        "name": "roles",
        "until": 600,
        "discovery": {"member_ttl": ttl},
        "agent": {"interval": 3600, "splay": 3600, "duration": 5},
        "nodes": {"app[1:3]": "app"},
        "roles": {"app": {}},
        "triggers": {"restart": {"hosts": "role:app"}},
        "fires": [{"at": t, "trigger": "restart"} for t in range(20, 560, 5)],
        "faults": [{"at": 100, "kind": "kill_watcher", "hosts": "app2", "for": 200}],
    }


def targeted(sim: Simulation, host: str) -> list[float]:
    return sorted(at for (h, _), at in sim.ledger.fired.items() if h == host)


def test_a_killed_watcher_drops_out_of_its_role_after_the_member_ttl_and_returns_on_restart():
    sim = simulate(role_spec(ttl=10))
    fires = [t for t in range(20, 560, 5)]
    app2 = targeted(sim, "app2")
    # Until the kill and for at most one member ttl after it, app2 is a member;
    # from then until the restart it is not; after the restart it is again.
    assert [t for t in fires if t < 100] == [t for t in app2 if t < 100]
    assert not [t for t in app2 if 110 <= t < 300]
    assert [t for t in fires if t >= 300] == [t for t in app2 if t >= 300]
    # The others were targeted by every fire.
    assert targeted(sim, "app1") == targeted(sim, "app3") == fires
    # What app2 was sent while dead (the lease still running) is served after the restart.
    report = build_report(sim)
    assert report.ok
    assert_every_fire_served(sim, report)
    late = [sim.ledger.served_by[k][1] for k, at in sim.ledger.fired.items() if k[0] == "app2" and 100 <= at < 300]
    assert late and min(late) >= 300


def test_a_node_cut_off_from_etcd_drops_out_of_its_role_and_comes_back():
    data = role_spec(ttl=6)
    data["faults"] = [{"at": 100, "kind": "cut_off", "hosts": "app3", "for": 100}]
    sim = simulate(data)
    app3 = targeted(sim, "app3")
    assert 95 in app3 and not [t for t in app3 if 107 <= t < 200]
    assert [t for t in app3 if t >= 205] == list(range(205, 560, 5))
    assert build_report(sim).ok


def test_a_role_with_no_live_member_refuses_the_fire_as_trigger_fire_does():
    data = role_spec()
    data["faults"] = [{"at": 50, "kind": "kill_watcher", "hosts": "app[1:3]"}]
    report = build_report(simulate(data))
    assert report.data["totals"]["fires_no_target"] > 90
    assert report.data["unserved"] and all("killed" in u["reason"] for u in report.data["unserved"])


def test_without_discovery_role_targets_are_the_static_table():
    data = role_spec()
    del data["discovery"]
    sim = simulate(data)
    assert targeted(sim, "app2") == list(range(20, 560, 5))  # even while its watcher is dead


# -- the scenario format ---------------------------------------------------------------------


@pytest.mark.parametrize("trigger, message", [
    ({"max_concurrent": -1}, "triggers.refresh.max_concurrent: expected an integer from 0"),
    ({"max_concurrent": True}, "triggers.refresh.max_concurrent: expected an integer"),
    ({"serial": "yes"}, "triggers.refresh.serial: expected true or false"),
    ({"serial": True, "max_concurrent": 2}, "triggers.refresh.serial: serial means max_concurrent 1"),
])
def test_bad_limits_name_the_field(trigger, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(storm(hosts=2, limit=0, **trigger))


@pytest.mark.parametrize("discovery, message", [
    ({"member_ttl": 1}, "discovery.member_ttl: expected an integer from 2"),
    ({"member_ttl": 2.5}, "discovery.member_ttl"),
    ({"ttl": 10}, "discovery.ttl: unknown field"),
])
def test_bad_discovery_names_the_field(discovery, message):
    data = role_spec()
    data["discovery"] = discovery
    with pytest.raises(ScenarioError, match=message):
        load_scenario(data)


def test_the_rolling_scenario_is_deterministic():
    first = run_scenario(SCENARIOS / "rolling.yaml", seed=3).to_json()
    assert first == run_scenario(SCENARIOS / "rolling.yaml", seed=3).to_json()


# -- a property over random scenarios with limits ---------------------------------------------


@st.composite
def limited_scenarios(draw):
    n_roles = draw(st.integers(1, 3))
    roles = [f"r{i}" for i in range(n_roles)]
    sizes = {r: draw(st.integers(1, 4)) for r in roles}
    triggers = {}
    for r in roles:
        spec = {"hosts": f"role:{r}", "ttl": draw(st.integers(1, 4))}
        limit = draw(st.integers(0, 3))
        if limit == 1 and draw(st.booleans()):
            spec["serial"] = True
        elif limit:
            spec["max_concurrent"] = limit
        triggers[f"to-{r}"] = spec
    names = sorted(triggers)
    spec_roles = {}
    for r in roles:
        kind = draw(st.sampled_from(["once", "never", 0.3, "always"]))
        notify = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
        spec_roles[r] = {
            "agent": {"duration": {"uniform": [5, draw(st.integers(5, 40))]}},
            "resources": {f"res-{r}": {"changes": kind, "notify": notify}},
        }
    interval = draw(st.integers(200, 900))
    until = draw(st.integers(300, 1200))
    data = {
        "name": "random-limits",
        "until": until,
        "drain": 7200,
        "agent": {"interval": interval, "splay": draw(st.integers(0, interval))},
        "nodes": {f"{r}n[1:{sizes[r]}]": r for r in roles},
        "roles": spec_roles,
        "triggers": triggers,
        "fires": [{"at": draw(st.integers(0, until)), "trigger": draw(st.sampled_from(names))}
                  for _ in range(draw(st.integers(0, 4)))],
    }
    if draw(st.booleans()):
        data["discovery"] = {"member_ttl": draw(st.integers(2, 30))}
    return data, draw(st.integers(0, 2**16))


@SETTINGS
@given(limited_scenarios())
def test_limits_are_never_exceeded_and_every_fire_is_served_without_faults(case):
    data, seed = case
    sim = simulate(data, seed)
    report = build_report(sim)
    by_role: dict[str, list[str]] = {}
    for host, role in sim.scenario.nodes:
        by_role.setdefault(role, []).append(host)
    for name, trigger in sim.scenario.triggers.items():
        if not trigger.max_concurrent:
            continue
        # Each role's hosts are targeted only by their own trigger, so every
        # triggered run on them held one of its slots.
        spans = triggered_spans(sim, by_role[name[3:]])
        assert most_at_once(spans) <= trigger.max_concurrent, (name, spans)
    assert not any(x["exceeded"] for x in report.data["limits"])
    assert report.ok, report.data["check"]
    assert_every_fire_served(sim, report)


# -- a run that loses etcd while it waits for a slot ---------------------------------------------


def test_a_run_waiting_for_a_slot_survives_a_one_second_cut_off():
    """It queues up again with a new lease, and acknowledges only once it holds a slot."""
    data = storm(hosts=2, limit=1, webs=1)
    data["roles"]["app"]["agent"] = {"splay": 600, "duration": 100}
    data["roles"]["web"]["resources"]["vhost"]["changes"] = "never"
    data["fires"] = [{"at": 10, "trigger": "refresh"}]
    data["faults"] = [{"at": 15, "kind": "cut_off", "hosts": "app2", "for": 1}]
    sim = simulate(data)
    report = build_report(sim)
    assert report.ok, report.data["check"]["problems"]
    assert len(triggered_spans(sim, ["app2"])) == 1
