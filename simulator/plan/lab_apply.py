"""Real Puppet as the watchers' run command when a plan is shown on the local lab.

    python lab_apply.py DIR     (this lab node's part is DIR/<hostname>.json)

`puppet apply` of the control repo as the fleet node this lab node plays:
certname = that node's name, its facts only from the repo's facts/NODE.json
(Puppet's json facts terminus; never this machine's facts, as compile.py
compiles), the repo's modulepath and hiera.yaml. The `trigger` resources
of the catalog fire through the module's exec and the real `trigger fire`,
which reads the run's lineage (TRIGGER_HOP, TRIGGER_CHAIN) from the
environment `trigger run` gave Puppet. The control repo names no etcd
endpoints (trigger::globals), so they come as ETCDCTL_ENDPOINTS, the
command's documented fallback.

Every run is one JSON line in the node file's `state_dir`/runs.jsonl
(start, end, run id, Puppet's exit code): what the comparison counts and
how long real runs took. Exits with Puppet's --detailed-exitcodes status.
Standard library only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def puppet_argv(node: dict) -> list[str]:
    repo = Path(node["repo"])
    return ["puppet", "apply", "--detailed-exitcodes", "--color=false",
            "--certname", node["certname"],
            "--facts_terminus", "json", "--client_datadir", str(repo),  # facts from REPO/facts/NAME.json
            "--modulepath", node["modulepath"], "--hiera_config", str(repo / "hiera.yaml"),
            str(repo / "manifests" / "site.pp")]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: lab_apply.py DIR", file=sys.stderr)
        return 2
    path = Path(argv[1]) / f"{socket.gethostname()}.json"
    try:
        node = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"lab_apply.py: {path}: {exc}", file=sys.stderr)
        return 2
    env = {**os.environ, "ETCDCTL_ENDPOINTS": node["endpoints"]}
    start = time.time()
    code = subprocess.run(puppet_argv(node), env=env, check=False).returncode
    end = time.time()
    # Read again: the driver points state_dir at the phase (converge, release) while the fleet is quiet.
    state = Path(json.loads(path.read_text())["state_dir"])
    state.mkdir(parents=True, exist_ok=True)
    run_id = os.environ.get("TRIGGER_RUN_ID", "")
    with open(state / "runs.jsonl", "a") as out:
        out.write(json.dumps({"kind": "triggered" if run_id else "scheduled", "run_id": run_id,
                              "hop": os.environ.get("TRIGGER_HOP", ""), "start": start, "end": end,
                              "exit_code": code}) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
