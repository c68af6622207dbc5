"""`--fail-on` parsing and findings, and the JSON document's fields."""

from __future__ import annotations

import pytest
from plan_catalogs import catalog, poke

from simulator.plan.analysis import analyse
from simulator.plan.importers import load_catalogs
from simulator.plan.report import findings, parse_fail_on, plan_document


def test_parse_fail_on():
    assert parse_fail_on("loop, storm:20,warning") == {"loop": None, "storm": 20, "warning": None}
    assert parse_fail_on("storm") == {"storm": 10}
    assert parse_fail_on(None) == {}
    with pytest.raises(ValueError, match="unknown finding 'loops'"):
        parse_fail_on("loops")
    with pytest.raises(ValueError, match="only storm takes a number"):
        parse_fail_on("loop:3")


def test_findings_name_each_loop_storm_and_warning():
    docs = [poke("a", "to b", ["b", "nowhere"]), poke("b", "to a", ["a"])] + \
        [poke(f"w{i}", "to a", ["a"]) for i in range(3)]
    plan = analyse(load_catalogs((d["name"], d) for d in docs).catalogs)
    assert findings(plan, {}) == []
    assert findings(plan, {"loop": None}) == [
        "loop: a, b through to a, to b: shortest cycle 2 hop(s), stopped by ttl 5 after 2 round(s)"]
    assert findings(plan, {"storm": 3}) == ["storm: one wave can bring 4 fires into a (more than 3)"]
    assert findings(plan, {"storm": 4}) == []
    assert findings(plan, {"warning": None}) == [
        "warning: a: trigger 'to b' targets nowhere, which matches no node"]


def test_the_document_has_the_fields_ci_reads():
    plan = analyse(load_catalogs([("a", poke("a", "t", ["b"])), ("b", catalog("b"))]).catalogs)
    doc = plan_document(plan)
    assert list(doc) == ["nodes", "triggers", "loops", "fan_in", "warnings", "errors"]
    assert doc["triggers"][0] == {
        "name": "t", "declared_on": "a", "hosts": ["b"], "targets": ["b"], "ttl": 5, "limit": 0,
        "wait": False, "file": "site.pp", "line": 1,
        "notifiers": [{"host": "a", "resource": "File[/etc/t]", "file": "site.pp", "line": 1,
                       "changes_by_itself": True, "every_run": False}]}
