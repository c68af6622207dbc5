"""Compiling with real Puppet, many nodes in one process; its pitfalls as one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from simulator.cli import main
from simulator.plan.compile import read_facts
from tests.conftest import need

ROOT = Path(__file__).parents[4]
REPO = ROOT / "examples" / "control-repo"
FIXTURES = Path(__file__).parent / "fixtures"


def _compile_args(facts: Path, *more: str) -> list[str]:
    return ["plan", "--manifest", str(REPO / "manifests" / "site.pp"), "--facts", str(facts),
            "--modulepath", f"{REPO / 'site'}:{ROOT / 'puppet'}", "--hiera-config", str(REPO / "hiera.yaml"),
            *more]


@pytest.mark.puppet
def test_the_control_repo_compiles_to_the_fixtures_plan_and_bad_nodes_are_one_line_each(capsys, tmp_path):
    need("puppet", "puppet")
    need("ruby", "ruby")
    facts = tmp_path / "facts"
    shutil.copytree(REPO / "facts", facts)
    # a node the manifest fails for (profile::app needs its peer from Hiera)
    (facts / "app03.example.com.json").write_text(json.dumps(
        {"name": "app03.example.com", "values": {"networking": {"fqdn": "app03.example.com"}}}))
    # a node with no facts (it would silently match `node default`)
    (facts / "web04.example.com.json").write_text(json.dumps({"name": "web04.example.com", "values": {}}))
    # an unquoted YAML timestamp in a facts file is read, not a failure
    (facts / "yaml05.example.com.yaml").write_text(
        "networking: {fqdn: yaml05.example.com}\nlast_boot: 2026-12-01 10:00:00\n")
    status = main(_compile_args(facts, "-o", "json", "--save-catalogs", str(tmp_path / "saved")))
    out, err = capsys.readouterr()
    assert status == 2  # some input was bad; the rest of the fleet is still planned
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0] == f"trigger-sim: {facts / 'web04.example.com.json'}: web04.example.com has no facts: " \
                       "it would compile as `node default`; skipped"
    assert lines[1].startswith("trigger-sim: app03.example.com: Evaluation Error: ")
    assert "expects a value for parameter 'peer'" in lines[1] and "on node app03.example.com" in lines[1]

    compiled = json.loads(out)
    assert [n["name"] for n in compiled["nodes"]] == [
        "app01.example.com", "app02.example.com", "lb01.example.com", "lb02.example.com",
        "mon01.example.com", "web01.example.com", "web02.example.com", "web03.example.com",
        "yaml05.example.com"]  # sorted by fact file: the YAML node matched `node default`
    # the same plan the committed fixtures give (made by the same compile), paths aside
    from simulator.plan.analysis import analyse
    from simulator.plan.importers import load_catalog_dir
    from simulator.plan.report import plan_document

    expected = plan_document(analyse(load_catalog_dir(FIXTURES / "puppet").catalogs))
    text = json.dumps({k: v for k, v in compiled.items() if k not in ("nodes", "fan_in", "errors")})
    assert json.loads(text.replace(str(ROOT) + "/", "")) == \
        {k: v for k, v in expected.items() if k not in ("nodes", "fan_in", "errors")}
    assert len(list((tmp_path / "saved").iterdir())) == 9


@pytest.mark.puppet
def test_a_manifest_that_does_not_parse_names_the_node(capsys, tmp_path):
    need("puppet", "puppet")
    need("ruby", "ruby")
    (tmp_path / "site.pp").write_text("node default { file { '/x': ensure => } }\n")
    facts = tmp_path / "facts"
    facts.mkdir()
    (facts / "a.json").write_text(json.dumps({"name": "a", "values": {"kernel": "Linux"}}))
    status = main(["plan", "--manifest", str(tmp_path / "site.pp"), "--facts", str(facts)])
    out, err = capsys.readouterr()
    assert status == 2
    assert err.splitlines()[0].startswith("trigger-sim: a: Could not parse for environment production: ")
    assert err.splitlines()[-1] == "trigger-sim: no catalog could be read: nothing to plan"


def test_a_missing_manifest_is_one_line(capsys, tmp_path):
    status = main(["plan", "--manifest", str(tmp_path / "nope.pp"), "--facts", str(REPO / "facts")])
    assert status == 2
    assert capsys.readouterr().err == f"trigger-sim: --manifest {tmp_path / 'nope.pp'}: no such file or directory\n"


def test_facts_files_of_both_shapes(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"name": "a.example.com", "values": {"x": 1}}))
    (tmp_path / "b.json").write_text(json.dumps({"x": 2}))  # facter -j: flat, named by the file
    (tmp_path / "c.yaml").write_text("when: 2026-12-01\n")
    (tmp_path / "d.json").write_text("[]")
    nodes, errors = read_facts(tmp_path)
    assert nodes == [{"name": "a.example.com", "facts": {"x": 1}}, {"name": "b", "facts": {"x": 2}},
                     {"name": "c", "facts": {"when": "2026-12-01"}}]
    assert errors == [f"{tmp_path / 'd.json'}: facts must be a mapping"]


@pytest.mark.puppet
def test_an_environment_path_compiles_like_manifest_and_modulepath(capsys, tmp_path):
    need("puppet", "puppet")
    need("ruby", "ruby")
    env = tmp_path / "environments" / "staging"
    (env / "modules").mkdir(parents=True)
    shutil.copytree(REPO / "manifests", env / "manifests")
    shutil.copytree(REPO / "data", env / "data")
    shutil.copy(REPO / "hiera.yaml", env / "hiera.yaml")  # the environment's own Hiera layer
    (env / "modules" / "profile").symlink_to(REPO / "site" / "profile")
    (env / "modules" / "trigger").symlink_to(ROOT / "puppet" / "trigger")
    status = main(["plan", "--environment-path", str(tmp_path / "environments"), "--environment", "staging",
                   "--facts", str(REPO / "facts"), "-o", "json"])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    compiled = json.loads(out)
    assert [(lp["hosts"], lp["ttl"]) for lp in compiled["loops"]] == [
        (["app01.example.com", "app02.example.com"], 3)]
    assert compiled["fan_in"]["lb01.example.com"] == 3
