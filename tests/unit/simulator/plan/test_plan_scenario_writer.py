"""The generated scenario: valid for `trigger-sim run`, alike hosts grouped, assumptions applied."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from plan_catalogs import catalog, poke, resource, trigger

from simulator.plan.analysis import analyse
from simulator.plan.importers import load_catalog_dir, load_catalogs
from simulator.plan.scenario_writer import (
    Assumptions, build_scenario, compress, duration_spec, parse_changes, scenario_yaml,
)
from simulator.scenario import parse_scenario

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def control_repo():
    return analyse(load_catalog_dir(FIXTURES / "puppet").catalogs)


def test_the_control_repo_scenario_by_default(control_repo):
    scenario = build_scenario(control_repo)
    parse_scenario(scenario, "plan")  # what `trigger-sim run` checks
    assert scenario["nodes"] == {"app01.example.com": "app", "app02.example.com": "app-2",
                                 "lb[01:02].example.com": "lb", "mon01.example.com": "mon",
                                 "web[01:03].example.com": "web"}
    assert scenario["roles"]["web"] == {"resources": {"File[/etc/shop-vhost.conf]": {
        "changes": "once", "from": 60.0, "notify": ["refresh load balancers"]}}}
    # the unconditional exec changes on every run whatever --changes says
    assert scenario["roles"]["app"]["resources"]["Exec[rebuild cache]"]["changes"] == "always"
    assert scenario["triggers"]["refresh load balancers"] == {
        "hosts": ["lb[01:02].example.com"], "ttl": 5, "max_concurrent": 1}
    assert scenario["fires"] == [{"at": 60.0, "trigger": "release"}]


def test_converge_makes_the_targets_catch_up(control_repo):
    scenario = build_scenario(control_repo, Assumptions(parse_changes("converge@120:web*")))
    parse_scenario(scenario, "plan")
    lb = scenario["roles"]["lb"]["resources"]["File[/etc/haproxy-backends.cfg]"]
    assert lb == {"changes": "until_converged", "collects": ["File[/etc/shop-vhost.conf]"],
                  "notify": ["refresh monitoring"]}
    assert scenario["triggers"]["release"]["hosts"] == ["web[01:03].example.com"]
    assert scenario["fires"] == [{"at": 120.0, "trigger": "release"}]


def test_always_and_rate(control_repo):
    always = build_scenario(control_repo, Assumptions(parse_changes("always")))
    assert "fires" not in always
    assert always["roles"]["web"]["resources"]["File[/etc/shop-vhost.conf]"]["changes"] == "always"
    rate = build_scenario(control_repo, Assumptions(parse_changes("rate:0.25")))
    assert rate["roles"]["web"]["resources"]["File[/etc/shop-vhost.conf]"]["changes"] == 0.25


def test_bad_assumptions_are_one_line():
    with pytest.raises(ValueError, match="expected release"):
        parse_changes("sometimes")
    with pytest.raises(ValueError, match="probability"):
        parse_changes("rate:2")
    with pytest.raises(ValueError, match="--duration 'x'"):
        duration_spec("x")
    assert duration_spec("20-40") == {"uniform": [20.0, 40.0]} and duration_spec("30") == 30.0


def test_a_release_glob_that_matches_nothing(control_repo):
    with pytest.raises(ValueError, match="no node matches 'db\\*'"):
        build_scenario(control_repo, Assumptions(parse_changes("release:db*")))


def test_a_trigger_with_no_target_left_is_not_in_the_scenario():
    plan = analyse(load_catalogs([("a", poke("a", "t", ["nowhere"]))]).catalogs)
    scenario = build_scenario(plan)
    assert "t" not in scenario["triggers"] and scenario["roles"]["a"] == {}
    parse_scenario(scenario, "plan")


def test_each_declaration_of_a_name_is_simulated_and_the_file_says_so():
    docs = [poke("w1", "t", ["lb"], ttl=3), poke("w2", "t", ["lb"]), poke("w3", "t", ["lb"]),
            catalog("lb", trigger("x", ["w1"], wait=True), resource("File", "/f", notify="Trigger[x]"))]
    plan = analyse(load_catalogs((d["name"], d) for d in docs).catalogs)
    assumptions = Assumptions()
    scenario = build_scenario(plan, assumptions)
    parse_scenario(scenario, "plan")
    # the most common declaration keeps the name; the other is `t #2`, notified by w1 only
    assert scenario["triggers"]["t"] == {"hosts": ["lb"], "ttl": 5}
    assert scenario["triggers"]["t #2"] == {"hosts": ["lb"], "ttl": 3}
    assert scenario["nodes"] == {"lb": "lb", "w1": "w", "w[2:3]": "w-2"}
    assert scenario["roles"]["w"]["resources"]["File[/etc/t]"]["notify"] == ["t #2"]
    text = scenario_yaml(scenario, plan, assumptions)
    assert "# Declared differently on different nodes" in text
    assert scenario["triggers"]["x"] == {"hosts": ["w1"], "ttl": 5, "wait": True, "wait_timeout": 600}
    assert yaml.safe_load(text) == scenario


def test_compress_names_into_ranges():
    assert compress(["web10", "web09", "web11", "lb1", "db", "web13"]) == ["db", "lb1", "web[09:11]", "web13"]
    assert compress(["a1.x", "a2.x", "a3.y"]) == ["a[1:2].x", "a3.y"]


def test_reports_give_each_resource_on_each_node_its_own_rate(control_repo):
    """`--changes reports`: the share of a node's reported runs in which the resource changed."""
    from dataclasses import replace

    from simulator.plan.scenario_writer import rates_from_reports

    reported = {"web01.example.com": {"runs": 4, "changed": {"File[/etc/shop-vhost.conf]": 1}},
                "web02.example.com": {"runs": 0, "changed": {}}}
    rates = rates_from_reports(reported)
    assert rates == {("web01.example.com", "File[/etc/shop-vhost.conf]"): 0.25}
    scenario = build_scenario(control_repo, Assumptions(replace(parse_changes("reports"), rates=rates)))
    parse_scenario(scenario, "plan")
    assert "fires" not in scenario  # no release: the reports say how often things change
    role_of = {name: role for names, role in scenario["nodes"].items() for name in _expand(names)}
    vhost = "File[/etc/shop-vhost.conf]"
    assert scenario["roles"][role_of["web01.example.com"]]["resources"][vhost]["changes"] == 0.25
    assert scenario["roles"][role_of["web02.example.com"]]["resources"][vhost]["changes"] == 0.0
    app = scenario["roles"][role_of["app01.example.com"]]["resources"]
    assert app["Exec[rebuild cache]"]["changes"] == "always"  # runs on every run whatever the reports say


def _expand(names: str) -> list[str]:
    """web[01:03].example.com -> the three names (the writer's ranges)."""
    import re

    match = re.match(r"(.*)\[(\d+):(\d+)\](.*)", names)
    if not match:
        return [names]
    head, first, last, tail = match.groups()
    return [f"{head}{i:0{len(first)}d}{tail}" for i in range(int(first), int(last) + 1)]
