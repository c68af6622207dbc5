"""The analysis: one test per warning, loops, fan-in, and how containers expand."""

from __future__ import annotations

from plan_catalogs import catalog, poke, resource, trigger

from simulator.plan.analysis import WARNING_KINDS, analyse
from simulator.plan.importers import load_catalogs


def plan_of(*docs):
    fleet = load_catalogs((f"{d['name']}.json", d) for d in docs)
    assert fleet.errors == []
    return analyse(fleet.catalogs)


def kinds(plan):
    return [(w.kind, w.node, w.trigger) for w in plan.warnings]


def test_a_clean_fleet_has_no_warning():
    plan = plan_of(poke("web1", "refresh", ["lb1"]), catalog("lb1"))
    assert plan.warnings == [] and plan.loops == []
    assert plan.fan_in == {"web1": 0, "lb1": 1}


def test_a_target_that_matches_no_node():
    plan = plan_of(poke("web1", "refresh", ["lb1", "lb9"]), catalog("lb1"))
    assert kinds(plan) == [("unknown_target", "web1", "refresh")]
    assert plan.warnings[0].message == "web1: trigger 'refresh' targets lb9, which matches no node"
    assert plan.triggers[0].targets == ("lb1",)


def test_a_role_no_node_has():
    plan = plan_of(poke("web1", "refresh", ["role:db"]))
    assert kinds(plan) == [("unknown_role", "web1", "refresh")]


def test_role_targets_resolve_through_trigger_role_and_the_watcher_class():
    lb1 = catalog("lb1", resource("Trigger::Role", "lb"))
    lb2 = catalog("lb2", resource("Class", "Trigger::Watch::Etcd", roles=["lb", "edge"]))
    gone = catalog("lb3", resource("Trigger::Role", "lb", ensure="absent"))
    plan = plan_of(poke("web1", "refresh", ["role:lb"]), lb1, lb2, gone)
    assert plan.triggers[0].targets == ("lb1", "lb2")
    assert plan.roles["lb2"] == ("lb", "edge")


def test_a_trigger_declared_differently_on_different_nodes():
    plan = plan_of(poke("web1", "refresh", ["lb1"], max_concurrent=2),
                   poke("web2", "refresh", ["lb1"], max_concurrent=1), catalog("lb1"))
    assert kinds(plan) == [("inconsistent_trigger", "", "refresh")]
    assert "declared 2 ways" in plan.warnings[0].message


def test_one_name_towards_each_nodes_own_peer_is_no_warning_without_a_limit():
    plan = plan_of(poke("a", "poke peer", ["b"]), poke("b", "poke peer", ["a"]))
    assert kinds(plan) == []
    limited = plan_of(poke("a", "poke peer", ["b"], serial=True), poke("b", "poke peer", ["a"], serial=True))
    assert kinds(limited) == [("inconsistent_trigger", "", "poke peer")]  # one set of slots for both


def test_a_trigger_nobody_notifies():
    plan = plan_of(catalog("web1", trigger("refresh", ["lb1"])), catalog("lb1"))
    assert kinds(plan) == [("unnotified_trigger", "web1", "refresh")]
    assert plan.fan_in["lb1"] == 0  # declared but never fired: no fires to bring


def test_a_trigger_that_targets_its_own_host():
    plan = plan_of(poke("web1", "refresh", ["web1"]))
    assert kinds(plan) == [("targets_own_host", "web1", "refresh")]
    assert plan.loops[0].shortest == 1 and plan.loops[0].rounds == 5


def test_wait_on_a_cycle():
    plan = plan_of(poke("a", "to b", ["b"], wait=True), poke("b", "to a", ["a"]))
    assert kinds(plan) == [("wait_on_cycle", "", "to b")]


def test_an_unconditional_exec_that_notifies_a_trigger():
    unconditional = resource("Exec", "rebuild", 7, command="/bin/true", notify="Trigger[t]")
    guarded = resource("Exec", "guarded", command="/bin/true", unless="/bin/false", notify="Trigger[t]")
    plan = plan_of(catalog("a", trigger("t", ["b"]), unconditional, guarded), catalog("b"))
    assert kinds(plan) == [("unconditional_exec", "a", "t")]
    assert "Exec[rebuild] (site.pp:7) has no refreshonly" in plan.warnings[0].message


def test_every_warning_kind_has_a_test():
    tested = {"unknown_target", "unknown_role", "inconsistent_trigger", "unnotified_trigger",
              "targets_own_host", "wait_on_cycle", "unconditional_exec"}
    assert set(WARNING_KINDS) == tested


def test_a_loop_reports_its_shortest_cycle_ttl_and_rounds():
    plan = plan_of(poke("a", "to b", ["b"], ttl=7), poke("b", "to c", ["c", "a"]), poke("c", "to a", ["a"]))
    (loop,) = plan.loops
    assert (loop.hosts, loop.shortest, loop.ttl, loop.rounds) == (("a", "b", "c"), 2, 5, 2)
    assert loop.triggers == ("to a", "to b", "to c") and not loop.every_run


def test_a_chain_without_a_cycle_is_no_loop():
    plan = plan_of(poke("a", "to b", ["b"]), poke("b", "to c", ["c"]), catalog("c"))
    assert plan.loops == []


def test_refresh_chains_are_transitive_and_containers_expand_to_their_leaves():
    doc = catalog(
        "a", trigger("t", ["b"]),
        resource("Class", "Profile::Conf", notify="Exec[hup]"),
        resource("File", "/one"), resource("File", "/two"),
        resource("Exec", "hup", refreshonly=True, notify="Trigger[t]"),
        resource("Exec", "trigger fire t", refreshonly=True),
        contains=[("Class[Profile::Conf]", "File[/one]"), ("Class[Profile::Conf]", "File[/two]"),
                  ("Trigger[t]", "Exec[trigger fire t]")])
    plan = plan_of(doc, catalog("b"))
    notifiers = [(n.resource, n.origin) for n in plan.triggers[0].notifiers]
    assert notifiers == [("Exec[hup]", False), ("File[/one]", True), ("File[/two]", True)]


def test_exported_resources_notify_nothing_on_the_exporting_node():
    exported = dict(resource("File", "/x", notify="Trigger[t]"), exported=True)
    plan = plan_of(catalog("a", trigger("t", ["b"]), exported), catalog("b"))
    assert kinds(plan) == [("unnotified_trigger", "a", "t")]


def test_a_trigger_parameter_that_is_no_number_is_one_error_and_the_rest_is_planned():
    fleet = load_catalogs([("a.json", poke("a", "t", ["b"], ttl="five")), ("b.json", poke("b", "u", ["a"]))])
    plan = analyse(fleet.catalogs, fleet.errors)
    assert plan.errors == ["a.json: a: Trigger[t]: ttl is 'five', not a number"]
    assert [d.name for d in plan.triggers] == ["u"]
