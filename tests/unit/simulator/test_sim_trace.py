"""The seed scenario's whole (time, host, what) trace, and determinism of the report.

The trace is the seed README's story on simulated time: each web node's
first scheduled run applies the new vhost and fires 'refresh load
balancers'; the watch delivers the fire 2 ms later (watch_latency); each
LB's watcher queues a run at once, task-spooler starts it at once (its
queue is empty), `trigger run` acknowledges the fire, Puppet finds a
vhost it has not collected yet (until_converged) and changes the HAProxy
config. The LBs' own scheduled runs, before any vhost exists, change
nothing. No fire waits for a scheduled run.
"""

from __future__ import annotations

import re

from simulator import SCENARIOS, run_scenario

SEED_TRACE = [
    (87.06, 'lb01.example.com', 'scheduled run: Puppet applies 0 change(s)'),
    (100.648, 'lb01.example.com', 'scheduled run ends, exit 0'),
    (154.856, 'lb02.example.com', 'scheduled run: Puppet applies 0 change(s)'),
    (167.782, 'lb02.example.com', 'scheduled run ends, exit 0'),
    (217.91, 'web03.example.com', 'scheduled run: Puppet applies 1 change(s)'),
    (255.962, 'web03.example.com', "fire 'refresh load balancers' ev0000001 hop 1 to 2 host(s)"),
    (255.962, 'web03.example.com', 'scheduled run ends, exit 2'),
    (255.964, 'lb01.example.com', 'queue r000001 for 1 fire(s)'),
    (255.964, 'lb01.example.com', 'r000001 starts: serves ev0000001 (hop 1)'),
    (255.964, 'lb01.example.com', 'r000001: Puppet applies 1 change(s)'),
    (255.964, 'lb02.example.com', 'queue r000001 for 1 fire(s)'),
    (255.964, 'lb02.example.com', 'r000001 starts: serves ev0000001 (hop 1)'),
    (255.964, 'lb02.example.com', 'r000001: Puppet applies 1 change(s)'),
    (269.094, 'lb02.example.com', 'r000001 ends, exit 2'),
    (269.988, 'lb01.example.com', 'r000001 ends, exit 2'),
    (460.995, 'web02.example.com', 'scheduled run: Puppet applies 1 change(s)'),
    (497.556, 'web02.example.com', "fire 'refresh load balancers' ev0000002 hop 1 to 2 host(s)"),
    (497.556, 'web02.example.com', 'scheduled run ends, exit 2'),
    (497.558, 'lb01.example.com', 'queue r000002 for 1 fire(s)'),
    (497.558, 'lb01.example.com', 'r000002 starts: serves ev0000002 (hop 1)'),
    (497.558, 'lb01.example.com', 'r000002: Puppet applies 1 change(s)'),
    (497.558, 'lb02.example.com', 'queue r000002 for 1 fire(s)'),
    (497.558, 'lb02.example.com', 'r000002 starts: serves ev0000002 (hop 1)'),
    (497.558, 'lb02.example.com', 'r000002: Puppet applies 1 change(s)'),
    (510.07, 'lb02.example.com', 'r000002 ends, exit 2'),
    (511.435, 'lb01.example.com', 'r000002 ends, exit 2'),
    (532.799, 'web01.example.com', 'scheduled run: Puppet applies 1 change(s)'),
    (553.001, 'web01.example.com', "fire 'refresh load balancers' ev0000003 hop 1 to 2 host(s)"),
    (553.001, 'web01.example.com', 'scheduled run ends, exit 2'),
    (553.003, 'lb01.example.com', 'queue r000003 for 1 fire(s)'),
    (553.003, 'lb01.example.com', 'r000003 starts: serves ev0000003 (hop 1)'),
    (553.003, 'lb01.example.com', 'r000003: Puppet applies 1 change(s)'),
    (553.003, 'lb02.example.com', 'queue r000003 for 1 fire(s)'),
    (553.003, 'lb02.example.com', 'r000003 starts: serves ev0000003 (hop 1)'),
    (553.003, 'lb02.example.com', 'r000003: Puppet applies 1 change(s)'),
    (564.194, 'lb02.example.com', 'r000003 ends, exit 2'),
    (565.995, 'lb01.example.com', 'r000003 ends, exit 2'),
]


def test_seed_scenario_trace_is_exactly_the_story():
    report = run_scenario(SCENARIOS / "seed.yaml", trace=True)
    assert report.trace == SEED_TRACE


def test_seed_trace_keeps_the_delivery_promise():
    """Independent of the literal: every fire is followed on each LB by a run that starts after it."""
    trace = run_scenario(SCENARIOS / "seed.yaml", trace=True).trace
    fires = [(t, re.search(r"ev\d+", what).group()) for t, host, what in trace
             if what.startswith("fire ")]
    assert len(fires) == 3
    for fired_at, event_id in fires:
        for lb in ("lb01.example.com", "lb02.example.com"):
            starts = [t for t, host, what in trace
                      if host == lb and "starts: serves" in what and event_id in what]
            assert len(starts) == 1 and starts[0] >= fired_at


def test_same_scenario_and_seed_give_identical_report_bytes():
    first = run_scenario(SCENARIOS / "faults.yaml", seed=7)
    second = run_scenario(SCENARIOS / "faults.yaml", seed=7)
    assert first.to_json() == second.to_json()
    assert first.events == second.events


def test_storm_report_is_identical_across_runs():
    first = run_scenario(SCENARIOS / "storm.yaml", seed=3).to_json()
    second = run_scenario(SCENARIOS / "storm.yaml", seed=3).to_json()
    assert first == second


def test_another_seed_gives_another_history():
    one = run_scenario(SCENARIOS / "faults.yaml", seed=1).data
    two = run_scenario(SCENARIOS / "faults.yaml", seed=2).data
    assert one["nodes"] != two["nodes"]
    assert one["seed"] == 1 and two["seed"] == 2


def test_report_bytes_do_not_depend_on_the_process_hash_seed(tmp_path):
    """Set and dict order must never leak into the report: run in two processes
    with different PYTHONHASHSEED and compare the files byte for byte."""
    import os
    import subprocess
    import sys

    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-m", "simulator.cli", "run", str(SCENARIOS / "faults.yaml"),
             "--out", str(out), "--no-plot", "--trace"],
            check=True, env=env, capture_output=True,
        )
        outputs.append(((out / "report.json").read_bytes(), (out / "trace.txt").read_bytes()))
    assert outputs[0] == outputs[1]
