"""What the lab tests look at on a node, through testinfra hosts.

A node records each triggered run in /var/lib/trigger-lab/runs.log (see
lab/base.py); task-spooler keeps the job of each run under the label
`trigger:<run-id>`. "Every fire is followed by a run on each target" means:
on each target there is a run that started after the fire, whose
task-spooler job finished with exit code 0.

Times come from the nodes' clocks (one clock in the local lab; synchronised
VMs in the Vagrant lab), never from the test runner's.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from lab.base import RUNS_LOG, TS_SOCKET
from tests.eventually import eventually
from trigger.queue.tsp import TspJob, parse_tsp_list

# How much longer than on namespaced nodes waiting takes: the lab fixture
# sets its lab's `time_scale` (emulated VMs run Puppet several times slower).
TIME_SCALE = 1.0


@dataclass(frozen=True)
class Run:
    """One line of runs.log: a Puppet run that a trigger started."""

    start: float
    run_id: str
    hop: int
    chain: tuple[str, ...]


def parse_runs_log(text: str) -> list[Run]:
    runs = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 4:
            continue
        start, run_id, hop, chain = fields
        runs.append(Run(float(start), run_id, int(hop),
                        tuple(chain.split(",")) if chain != "-" else ()))
    return runs


def runs(host) -> list[Run]:
    return parse_runs_log(host.check_output(f"cat {RUNS_LOG} 2>/dev/null || true"))


def runs_since(host, since: float) -> list[Run]:
    return [r for r in runs(host) if r.start > since]


def tsp_jobs(host) -> list[TspJob]:
    return parse_tsp_list(host.check_output(f"TS_SOCKET={TS_SOCKET} tsp -l"))


def now(host) -> float:
    return float(host.check_output("date +%s.%N"))


def fire(host, name: str, targets: list[str], endpoints: list[str], ttl: int | None = None) -> float:
    """`trigger fire` on the host; returns the host's time just after the fire returned.

    A run that started after that time started after the fire.
    """
    argv = ["trigger", "fire", "--hosts", ",".join(targets), "--endpoints", ",".join(endpoints)]
    if ttl is not None:
        argv += ["--ttl", str(ttl)]
    command = shlex.join([*argv, "--", name]) + " && date +%s.%N"
    out = host.run(command)
    assert out.rc == 0, f"trigger fire {name} failed ({out.rc}): {out.stderr.strip()}"
    return float(out.stdout.split()[-1])


def etcdctl(endpoints: list[str], args: str) -> str:
    """A shell line running etcdctl (v3) against `endpoints` with `args`."""
    return f"ETCDCTL_API=3 ETCDCTL_ENDPOINTS={','.join(endpoints)} etcdctl {args}"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    """`tests.eventually.eventually`, polling the nodes every half second; the
    timeout is scaled for slow labs (TIME_SCALE: VMs under emulation)."""
    return eventually(predicate, timeout * TIME_SCALE, what, interval)


def finished_run_after(host, since: float) -> Run | None:
    """A run that started after `since` and whose task-spooler job finished with 0 (or 2)."""
    jobs = {job.run_id: job for job in tsp_jobs(host) if job.run_id}
    for run in runs_since(host, since):
        job = jobs.get(run.run_id)
        # 2: `puppet agent --test` (the master lab) applied changes
        if job is not None and job.state == "finished" and job.exit_code in (0, 2):
            return run
    return None


def assert_followed_by_runs(hosts: dict, targets: list[str], fired_at: float,
                            timeout: float = 60.0) -> dict[str, Run]:
    """Each target gets a finished run that started after `fired_at`."""
    found = {}
    for name in targets:
        found[name] = wait_until(
            lambda: finished_run_after(hosts[name], fired_at), timeout,
            f"no finished run on {name} that started after the fire at {fired_at:.3f}; "
            f"runs.log: {runs(hosts[name])[-3:]}; tsp: {tsp_jobs(hosts[name])[-3:]}")
    return found


def idle(host) -> bool:
    """No job queued or running in the node's task-spooler."""
    return not any(job.state in ("queued", "running", "allocating") for job in tsp_jobs(host))
