"""Fire to run end of a triggered Puppet run on a lab that is up.

    python -m lab.fire_timing [--master] [--name NAME] [--fires 5]

From node3, `trigger fire --wait --output json` at node1, one fire at a
time; prints each fire's seconds from the fire to the end of node1's run
(its run record's finished_at minus the fire's fired_at) and the median.
On the masterless lab a run is `puppet apply` of the lab's manifests; on
the master lab it is `puppet agent --test` against the server, so the
difference is what asking the server for a catalog (and sending the
report to PuppetDB) costs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from datetime import datetime

from .local import LocalLab


def seconds_to_run_end(document: dict) -> float:
    """A `fire --wait --output json` document: its one host's finished_at minus fired_at."""
    fired = datetime.fromisoformat(document["fired_at"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(document["hosts"][0]["finished_at"].replace("Z", "+00:00"))
    return (ended - fired).total_seconds()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.fire_timing", description=__doc__.splitlines()[0])
    parser.add_argument("--master", action="store_true", help="the master lab (default: the masterless one)")
    parser.add_argument("--name", help="the lab's name (default: dev, with --master: master)")
    parser.add_argument("--fires", type=int, default=5)
    args = parser.parse_args(argv)
    if args.master:
        from .local.master import MasterLab

        lab = MasterLab(name=args.name or "master")
    else:
        lab = LocalLab(name=args.name or "dev")
    fire = ["trigger", "fire", "lab timing", "--hosts", "node1", "--wait", "--output", "json",
            "--timeout", "600", "--endpoints", ",".join(lab.endpoints("node3"))]
    times = []
    for _ in range(args.fires):
        done = lab.run("node3", fire, timeout=700)
        if done.returncode != 0:
            print(f"{shlex.join(fire)} exited {done.returncode}: {done.stderr.strip()}")
            return 1
        times.append(seconds_to_run_end(json.loads(done.stdout)))
        print(f"fire -> run end: {times[-1]:.2f} s", flush=True)
    print(f"median of {len(times)}: {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
