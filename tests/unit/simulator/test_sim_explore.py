"""Swarm testing: random faults on many seeds, each checked; failures shrunk and reproducible."""

from __future__ import annotations

import pytest

import trigger.procedures as procedures
import trigger.runner as runner
from simulator import SCENARIOS, load_scenario
from simulator.cli import main
from simulator.explore import explore, parse_kinds


def test_a_few_hundred_seeds_with_random_faults_all_keep_the_promise():
    failures, per_second = explore(load_scenario(SCENARIOS / "seed.yaml"), 300)
    assert failures == [], [(f.seed, [x.describe() for x in f.faults], f.problems) for f in failures]
    print(f"explore seed.yaml: 300 runs, {per_second:.0f} runs/s")


def test_the_old_acknowledgement_is_found_shrunk_and_reproduced(monkeypatch, tmp_path, capsys):
    """Entries removed when a run starts (the first round's rule) lose the
    fires of a run killed during its command: explore must say so."""
    claim = runner.start_run

    def acknowledge_at_start(store, layout, host, run_id, now, held=None, execution=""):
        record = claim(store, layout, host, run_id, now, held, execution)
        for event_id in getattr(record, "served", ()):  # not the limits to take slots for
            store.delete(layout.entry_key(host, event_id))
        return record

    monkeypatch.setattr(procedures, "start_run", acknowledge_at_start)
    code = main(["explore", "seed", "--runs", "100", "--faults", "kill_run,reboot", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    failing = [line for line in out.splitlines() if line.startswith("seed ")]
    assert failing and all(" fails with " in line and ";" not in line.split(": ")[0] for line in failing)
    reproducer = out.split("reproduce: trigger-sim run ")[1].split()[0]
    assert main(["run", reproducer, "--check", "--no-plot", "--out", str(tmp_path / "run")]) == 1
    monkeypatch.undo()  # the fixed rule passes the same scenario
    assert main(["run", reproducer, "--check", "--no-plot", "--out", str(tmp_path / "fixed")]) == 0


def test_unknown_fault_kinds_are_a_one_line_error(capsys):
    with pytest.raises(ValueError, match="unknown fault kind melt"):
        parse_kinds("cut_off,melt")
    assert main(["explore", "seed", "--faults", "melt"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    with pytest.raises(ValueError, match="unknown fault kind kill_runer; did you mean kill_runner"):
        parse_kinds("kill_runer")


def test_explore_draws_issue_21s_faults_and_writes_them_back_as_they_were():
    import random

    from simulator.explore import DEFAULT_KINDS, fault_spec, random_faults

    scenario = load_scenario(SCENARIOS / "faults.yaml")
    drawn = [f for seed in range(200)
             for f in random_faults(scenario, random.Random(f"explore/{seed}"), DEFAULT_KINDS)]
    new = ("kill_runner", "orphan_child", "kill_job", "black_hole", "clock_step")
    assert set(new) <= {f.kind for f in drawn}
    for fault in drawn:
        if fault.kind in new:  # a reproducer file holds the same fault
            data = {"until": 1, "nodes": {fault.hosts[0]: "r"}, "roles": {"r": {}}, "faults": [fault_spec(fault)]}
            assert load_scenario(data).faults == (fault,)
    assert {f.step for f in drawn if f.kind == "clock_step"} >= {-10.0, 3600.0}


def test_a_simulation_that_raises_is_a_failure_shrunk_and_reproduced(monkeypatch, tmp_path, capsys):
    """A crash of the protocol code on one seed (the run lock's read, issue 21)
    ended the whole exploration in a traceback; it is a failure like the others."""
    def broken(*args, **kwargs):
        raise RuntimeError("finish_run broke")

    monkeypatch.setattr(procedures, "finish_run", broken)
    code = main(["explore", "seed", "--runs", "2", "--faults", "kill_job", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "the simulation raised RuntimeError: finish_run broke" in out
    assert "reproduce: trigger-sim run " in out
