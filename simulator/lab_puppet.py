"""The stand-in for Puppet on a lab node when `trigger-sim run --lab` replays a scenario.

    python lab_puppet.py DIR     (the watchers' run command, and the driver's
                                  scheduled runs; the node's plan is DIR/<hostname>.json)

It does what the simulator's fake Puppet run does, on the node, for real:
take Puppet's run lock (a scheduled run skips its turn when a run is in
progress; a triggered run, started by `trigger run` with TRIGGER_RUN_ID in
its environment, waits for the lock as `--waitforlock` does), take the
next run of the node's plan (its duration and the triggers it notified in
the simulation, in the order the simulator ran them), sleep that long, and
fire each notified trigger with the real `trigger fire`, which reads the
run's lineage (TRIGGER_HOP, TRIGGER_CHAIN) from the environment.

A run that starts later than its simulated twin did (on the scenario
clock in DIR/clock.json) sleeps that much less, never less than nothing
and never more than its duration: the real programs' process start-ups
(`trigger fire`, `trigger run`: about a second a hop on a busy machine)
do not shrink with the time scale, and would otherwise add up along a
chain of runs until the lab's order of events is no longer the
simulation's. How late each run started is recorded, and reported.

Every run, and every skipped turn, is one JSON line in the plan's
`state_dir`/runs.jsonl. Standard library only; trigger names and hosts
are passed as argv words, never through a shell.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: lab_puppet.py DIR", file=sys.stderr)
        return 2
    plan = json.loads((Path(argv[1]) / f"{socket.gethostname()}.json").read_text())
    clock = json.loads((Path(argv[1]) / "clock.json").read_text())
    state = Path(plan["state_dir"])
    state.mkdir(parents=True, exist_ok=True)
    run_id = os.environ.get("TRIGGER_RUN_ID", "")
    kind = "triggered" if run_id else "scheduled"
    with open(state / "puppet.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if run_id else fcntl.LOCK_NB))
        except BlockingIOError:  # `puppet agent`: "a run is already in progress; skipping"
            _record(state, {"kind": "skipped", "start": time.time(), "end": time.time()})
            return 0
        start = time.time()
        index = _next_index(state)
        runs = plan["runs"]
        # A run the simulation never made (the lab made more): no change, the node's mean time.
        duration, notify, planned = runs[index] if index < len(runs) else (plan["default_duration"], [], None)
        late = 0.0 if planned is None else start - _wall(clock, planned)
        time.sleep(min(duration, max(0.0, duration - late)))
        for name in notify:
            _fire(plan, name)
        end = time.time()
        _record(state, {"kind": kind, "run_id": run_id, "start": start, "end": end, "index": index,
                        "late": round(late, 3)})
    return 2 if notify else 0  # puppet --detailed-exitcodes: 2 when something changed


def _wall(clock: dict, t: float) -> float:
    """When scenario time t came on the lab: the clock's last anchor, then `scale` per second."""
    return clock["wall"] + (t - clock["at"]) / clock["scale"]


def _next_index(state: Path) -> int:
    counter = state / "count"
    index = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(index + 1))
    return index


def _fire(plan: dict, name: str) -> None:
    spec = plan["triggers"][name]
    argv = [sys.executable, "-m", "trigger", "fire", "--hosts", ",".join(spec["hosts"]),
            "--ttl", str(spec["ttl"]), "--endpoints", plan["endpoints"]]
    if spec["max_concurrent"]:
        argv += ["--max-concurrent", str(spec["max_concurrent"])]
    # Exit 3 is a fire the loop's ttl refused: recorded in etcd, as intended.
    subprocess.run([*argv, "--", name], stdout=subprocess.DEVNULL, check=False)


def _record(state: Path, line: dict) -> None:
    with open(state / "runs.jsonl", "a") as out:
        out.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
