"""The report's `--check` verdicts: each one fails when what it promises breaks.

A correct simulation gives the check nothing to find, so each test runs a
small scenario that serves its one fire, then adds to its outcome what a
broken watcher would leave behind, the way a parser is tested on captured
text: an inbox entry nothing followed, a fire whose only run started
before it.
"""

from __future__ import annotations

from simulator.report import build_report
from simulator.scenario import load_scenario
from simulator.simulation import Simulation
from tests.unit.simulator.test_sim_model import LB, WEB, spec
from trigger.fire import Lineage, fire
from trigger.records import RunRecord


def served_once() -> Simulation:
    """WEB fires 'refresh' to LB at 10 s; LB's run r000001 starts at 10.002 s and serves it."""
    sim = Simulation(load_scenario(spec()), seed=1).run()
    assert build_report(sim).data["check"] == {"ok": True, "problems": []}
    return sim


def test_a_fire_left_in_the_inbox_that_no_fault_explains_fails_the_check():
    sim = served_once()
    # The fire is written and recorded, but nothing runs for it: a lost watch.
    fire(sim.operator, sim.layout, "refresh", [LB], Lineage(), WEB, now=sim.ended_at, event_id="ev9")
    sim.ledger.fired[(LB, "ev9")] = sim.ended_at
    report = build_report(sim)
    assert not report.ok
    assert report.data["check"]["problems"] == [
        f"1 fire(s) on {LB} never followed by a run, and no fault explains it"]


def test_a_fire_whose_only_run_started_before_it_fails_the_check():
    """A run claims the fires present when it starts: a fire taken out of the
    inbox by a run that started before it was never served."""
    sim = served_once()
    (run_started,) = sim.ledger.completed[(LB, "ev0000001")]
    sim.ledger.fired[(LB, "ev_late")] = run_started + 5  # fired while r000001 ran
    earlier_run = RunRecord("r000001", LB, "finished", started_at=run_started, served=("ev_late",))
    sim.ledger.finished(LB, earlier_run, run_started + 10)
    report = build_report(sim)
    assert not report.ok
    assert report.data["check"]["problems"] == [
        f"1 fire(s) left the inbox without a run that started after them and ran to its end, "
        f"first ev_late on {LB}"]
