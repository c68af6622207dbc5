"""The importers: three shapes of the same fleet give the same plan and the same scenario."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from simulator.plan.analysis import analyse
from simulator.plan.importers import detect_shape, load_catalog_dir, load_catalogs, parse_catalog
from simulator.plan.report import plan_document
from simulator.plan.scenario_writer import build_scenario
from simulator.plan.shapes import to_query, to_wire

FIXTURES = Path(__file__).parent / "fixtures"
SHAPES = ("puppet", "wire", "query")


def _plan(shape: str):
    fleet = load_catalog_dir(FIXTURES / shape)
    assert fleet.errors == []
    return analyse(fleet.catalogs)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_is_detected_and_read(shape):
    fleet = load_catalog_dir(FIXTURES / shape)
    assert [c.shape for c in fleet.catalogs] == [shape] * 8
    assert [c.node for c in fleet.catalogs][:2] == ["app01.example.com", "app02.example.com"]


def test_the_three_shapes_give_the_same_plan_and_the_same_scenario():
    plans = {shape: _plan(shape) for shape in SHAPES}
    documents = {shape: plan_document(plan) for shape, plan in plans.items()}
    assert documents["wire"] == documents["puppet"]
    assert documents["query"] == documents["puppet"]
    scenarios = {shape: build_scenario(plan) for shape, plan in plans.items()}
    assert scenarios["wire"] == scenarios["query"] == scenarios["puppet"]


def test_the_control_repo_plan():
    doc = plan_document(_plan("puppet"))
    lbs = [t for t in doc["triggers"] if t["name"] == "refresh load balancers"]
    assert [t["declared_on"] for t in lbs] == ["web01.example.com", "web02.example.com", "web03.example.com"]
    # role:lb resolved through trigger::role; the `~>` chain: file ~> refreshonly exec ~> trigger
    assert lbs[0]["targets"] == ["lb01.example.com", "lb02.example.com"]
    assert lbs[0]["limit"] == 1
    assert [(n["resource"], n["changes_by_itself"]) for n in lbs[0]["notifiers"]] == [
        ("Exec[reload web]", False), ("File[/etc/shop-vhost.conf]", True)]
    assert lbs[0]["notifiers"][1]["file"] == "examples/control-repo/site/profile/manifests/web.pp"
    # a class-level notify reaches the trigger from each file in the class
    mon = next(t for t in doc["triggers"] if t["name"] == "refresh monitoring")
    assert [n["resource"] for n in mon["notifiers"]] == [
        "File[/etc/haproxy-backends.cfg]", "File[/etc/haproxy-frontend.cfg]"]
    assert doc["loops"] == [{"hosts": ["app01.example.com", "app02.example.com"],
                             "triggers": ["poke app01.example.com", "poke app02.example.com"],
                             "shortest_cycle_hops": 2, "ttl": 3, "rounds": 1, "every_run": True,
                             "wait_triggers": []}]
    assert doc["fan_in"]["lb01.example.com"] == 3 and doc["fan_in"]["mon01.example.com"] == 2


@pytest.mark.parametrize("shape", ["wire", "query"])
def test_puppetdb_shapes_are_read_from_their_typed_edges(shape):
    """Without any relationship metaparameter left, the typed edges alone give the same plan."""
    docs = []
    for path in sorted((FIXTURES / shape).glob("*.json")):
        doc = json.loads(path.read_text())
        resources = doc["resources"]["data"] if shape == "query" else doc["resources"]
        for r in resources:
            for param in ("notify", "subscribe", "before", "require"):
                r["parameters"].pop(param, None)
        docs.append((path.name, doc))
    assert plan_document(analyse(load_catalogs(docs).catalogs)) == plan_document(_plan("puppet"))


def test_subscribe_is_a_refresh_from_the_other_resource():
    from plan_catalogs import catalog, resource, trigger

    doc = catalog("a", trigger("t", ["b"]), resource("File", "/x"),
                  resource("Exec", "hup", refreshonly=True, subscribe=["File[/x]"], notify="Trigger[t]"))
    for shaped in (doc, to_wire(doc), to_query(to_wire(doc))):
        plan = analyse(load_catalogs([("a.json", shaped), ("b.json", to_wire(catalog("b")))]).catalogs)
        assert [n.resource for n in plan.triggers[0].notifiers] == ["Exec[hup]", "File[/x]"]


def test_an_array_of_query_catalogs_gives_one_catalog_each():
    docs = [json.loads(p.read_text()) for p in sorted((FIXTURES / "query").glob("*.json"))]
    fleet = load_catalogs([("catalogs", docs)])
    assert len(fleet.catalogs) == 8 and fleet.errors == []


def test_a_replace_catalog_command_is_read_as_wire_format():
    wire = json.loads((FIXTURES / "wire" / "web01.example.com.json").read_text())
    assert detect_shape({"command": "replace catalog", "version": 9, "payload": wire}) == "wire"


def test_bad_documents_are_one_line_each_and_the_rest_is_read(tmp_path):
    for path in (FIXTURES / "puppet").glob("web0*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "facts.json").write_text(json.dumps({"name": "x", "values": {}}))
    (tmp_path / "again.json").write_text((FIXTURES / "wire" / "web01.example.com.json").read_text())
    fleet = load_catalog_dir(tmp_path)
    assert [c.node for c in fleet.catalogs] == ["web01.example.com", "web02.example.com", "web03.example.com"]
    assert [c.source for c in fleet.catalogs][0] == str(tmp_path / "again.json")  # sorted: read first
    assert len(fleet.errors) == 3
    assert fleet.errors[0].startswith(f"{tmp_path / 'broken.json'}: not JSON")
    assert fleet.errors[1].startswith(f"{tmp_path / 'facts.json'}: not a catalog of a known shape")
    assert fleet.errors[2] == (f"{tmp_path / 'web01.example.com.json'}: web01.example.com already read "
                               f"from {tmp_path / 'again.json'}; ignored")
    assert all("\n" not in line for line in fleet.errors)


def test_a_relationship_that_is_not_a_reference_names_node_and_resource():
    from plan_catalogs import catalog, resource

    doc = catalog("a", resource("File", "/x", notify=["not a ref"]))
    fleet = load_catalogs([("a.json", doc)])
    assert fleet.errors == ["a.json: a: File[/x]: notify names 'not a ref', not a resource reference"]


def test_parse_catalog_keeps_quoted_titles_and_class_names_canonical():
    from plan_catalogs import catalog, resource

    doc = catalog("a", resource("Class", "Profile::Web", notify="Trigger['t']"),
                  resource("File", "/y", subscribe="Class[profile::web]"))
    refreshes = parse_catalog(copy.deepcopy(doc), "a").refreshes
    assert refreshes == {("Class[Profile::Web]", "Trigger[t]"), ("Class[Profile::Web]", "File[/y]")}
