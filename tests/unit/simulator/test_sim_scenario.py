"""Scenario files: name ranges, defaults, and one-line errors that name the field."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import SCENARIOS
from simulator.scenario import ScenarioError, expand_names, load_scenario


def minimal(**overrides) -> dict:
    data = {
        "until": 60,
        "nodes": {"web[1:2].example.com": "web", "lb.example.com": "lb"},
        "roles": {"web": {"resources": {"vhost": {"changes": "once", "notify": ["t"]}}}, "lb": {}},
        "triggers": {"t": {"hosts": "role:lb"}},
    }
    data.update(overrides)
    return data


def test_name_ranges_keep_the_width_of_their_start():
    assert expand_names("web[001:003].example.com") == [
        "web001.example.com", "web002.example.com", "web003.example.com"]
    assert expand_names("w[8:10]") == ["w8", "w9", "w10"]
    assert expand_names("r[1:2]n[1:2]") == ["r1n1", "r1n2", "r2n1", "r2n2"]
    assert expand_names("plain.example.com") == ["plain.example.com"]


def test_defaults_and_role_targets():
    scenario = load_scenario(minimal())
    assert scenario.nodes == (("web1.example.com", "web"), ("web2.example.com", "web"),
                              ("lb.example.com", "lb"))
    assert scenario.triggers["t"].hosts == ("lb.example.com",)
    assert scenario.triggers["t"].ttl == 5
    assert scenario.roles["web"].agent.interval == 1800
    assert scenario.watcher.check_interval == 5 and scenario.watcher.idle_check == 300


@pytest.mark.parametrize("shipped", sorted(p.stem for p in SCENARIOS.glob("*.yaml")))
def test_shipped_scenarios_load(shipped):
    scenario = load_scenario(SCENARIOS / f"{shipped}.yaml")
    assert scenario.name == shipped and scenario.description


def test_fleet_has_ten_thousand_nodes():
    assert len(load_scenario(SCENARIOS / "fleet.yaml").nodes) == 10_000


BAD = [
    ({"until": -1}, "until: must be more than 0"),
    ({"untill": 5}, "scenario.untill: unknown field"),
    ({"nodes": {"web[3:1]": "web"}}, "nodes.web[3:1]: name range [3:1]"),
    ({"nodes": {"bad host": "web"}}, "nodes.bad host: bad host name"),
    ({"nodes": {"x": "nosuch"}}, "nodes: role 'nosuch' has no entry under roles"),
    ({"triggers": {"t": {"hosts": "role:db"}}}, "triggers.t.hosts: no node has role 'db'"),
    ({"triggers": {"t": {"hosts": ["ghost.example.com"]}}},
     "triggers.t.hosts[0]: ghost.example.com is not a node of this scenario"),
    ({"triggers": {"t": {"hosts": "role:lb", "ttl": 0}}}, "triggers.t.ttl: expected an integer from 1 to 100"),
    ({"roles": {"web": {"resources": {"vhost": {"changes": "sometimes"}}}, "lb": {}}},
     "roles.web.resources.vhost.changes: expected once, always, never, until_converged or a probability"),
    ({"roles": {"web": {"resources": {"vhost": {"changes": 1.5}}}, "lb": {}}},
     "roles.web.resources.vhost.changes: a probability must be from 0 to 1"),
    ({"roles": {"web": {"resources": {"vhost": {"notify": ["nope"]}}}, "lb": {}}},
     "roles.web.resources.vhost.notify[0]: no trigger named 'nope'"),
    ({"roles": {"web": {"resources": {"cfg": {"changes": "until_converged"}}}, "lb": {}}},
     "roles.web.resources.cfg.collects: until_converged needs the resources it collects"),
    ({"roles": {"web": {"agent": {"duration": {"uniform": [5, 1]}}}, "lb": {}}},
     "roles.web.agent.duration.uniform: expected 0 < MIN <= MAX"),
    ({"agent": {"duration": {"gamma": 3}}}, "agent.duration.gamma: unknown field"),
    ({"faults": [{"at": 1, "kind": "meteor"}]}, "faults[0].kind: expected one of cut_off"),
    ({"faults": [{"at": 1, "kind": "cut_off"}]}, "faults[0].hosts: missing (required for cut_off)"),
    ({"faults": [{"at": 1, "kind": "restart_etcd", "hosts": "all"}]}, "faults[0].hosts: restart_etcd affects etcd"),
    ({"faults": [{"at": 1, "kind": "clock_step", "hosts": "all"}]},
     "faults[0].step: missing (required for clock_step: seconds, negative steps back)"),
    ({"faults": [{"at": 1, "kind": "clock_step", "hosts": "all", "step": 0}]},
     "faults[0].step: expected seconds from -3.1536e+08 to 3.1536e+08, not 0, got 0"),
    ({"faults": [{"at": 1, "kind": "clock_step", "hosts": "all", "step": "-10s"}]},
     "faults[0].step: expected a number, got '-10s'"),
    ({"faults": [{"at": 1, "kind": "black_hole", "hosts": "all", "step": 5}]},
     "faults[0].step: only clock_step takes a step"),
    ({"faults": [{"at": 1, "kind": "kill_runner", "hosts": "all", "for": 5}]},
     "faults[0].for: kill_runner happens at once; remove for"),
    ({"faults": [{"at": 1, "kind": "kill_job"}]}, "faults[0].hosts: missing (required for kill_job)"),
    ({"faults": [{"at": 1, "kind": "orphan_child", "hosts": "role:lb", "for": -1}]},
     "faults[0].for: must be at least 0"),
    ({"fires": [{"at": 1, "trigger": "nope"}]}, "fires[0].trigger: no trigger named 'nope'"),
    ({"watcher": {"check_interval": 0}}, "watcher.check_interval: must be more than 0"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_input_is_one_line_naming_the_field(change, message):
    with pytest.raises(ScenarioError) as error:
        load_scenario(minimal(**change))
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("until: [1\n")
    with pytest.raises(ScenarioError, match=r"s.yaml: not valid YAML at line 2"):
        load_scenario(path)
    path.write_text("- a list\n")
    with pytest.raises(ScenarioError, match="expected a mapping at the top, got a list"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(tmp_path / "missing.yaml")
    path.write_text(yaml.safe_dump(minimal(until="soon")))
    with pytest.raises(ScenarioError, match=r"s.yaml: until: expected a number, got 'soon'"):
        load_scenario(path)



def test_a_duplicate_key_is_refused_with_both_lines(tmp_path, capsys):
    """YAML lets a later key silently replace an earlier one: a scenario
    with two `until:` (or two roles of one name) would run something else
    than its author read."""
    from simulator.cli import main

    path = tmp_path / "twice.yaml"
    path.write_text("until: 900\nnodes:\n  a: web\nroles:\n  web: {}\n  web: {agent: {interval: 5}}\n")
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert str(error.value) == (f"{path}: not valid YAML at line 6 column 3: duplicate key 'web' "
                                "(first at line 5)")
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err == f"trigger-sim: {error.value}\n"
    path.write_text("until: 900\nnodes:\n  a: web\nroles:\n  web: {}\nuntil: 60\n")
    with pytest.raises(ScenarioError, match=r"at line 6 column 1: duplicate key 'until' \(first at line 1\)$"):
        load_scenario(path)


def test_merge_keys_may_still_be_overridden(tmp_path):
    """`<<: *defaults` then a key of its own is YAML's way to override, not a duplicate."""
    path = tmp_path / "merge.yaml"
    path.write_text("agent: &agent {interval: 1800, splay: 10}\nroles:\n  web:\n"
                    "    agent: {<<: *agent, splay: 20}\nuntil: 900\nnodes: {a: web}\n")
    assert load_scenario(path).roles["web"].agent.splay == 20


def test_the_readme_example_is_a_valid_scenario_that_passes_its_check():
    import re
    from pathlib import Path

    from simulator import run_scenario

    readme = (Path(__file__).parents[3] / "simulator" / "README.md").read_text()
    example = re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)[0]
    report = run_scenario(yaml.safe_load(example))
    assert report.ok and report.data["totals"]["runs_triggered"] > 0


def _paths(value, prefix=()):
    """Every path into a nested dict/list, for replacing what sits there."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, prefix + (i,))


JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
    st.text(max_size=8), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@settings(max_examples=int(__import__("os").environ.get("SIM_EXAMPLES", "300")), deadline=None)
@given(st.data())
def test_any_damage_to_a_scenario_is_a_one_line_error_or_fine(data):
    import copy

    base = minimal(faults=[{"at": 1, "kind": "slow_runs", "hosts": "role:web", "for": 5, "factor": 2},
                           {"at": 2, "kind": "clock_step", "hosts": "role:web", "for": 5, "step": -10}],
                   fires=[{"at": 3, "trigger": "t"}], agent={"duration": {"uniform": [1, 2]}})
    damaged = copy.deepcopy(base)
    path = data.draw(st.sampled_from([p for p in _paths(base) if p]))
    target = damaged
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(JUNK)
    try:
        load_scenario(damaged)
    except ScenarioError as error:
        assert "\n" not in str(error) and str(error)
