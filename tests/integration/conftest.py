"""A real node on loopback: etcd, a task-spooler server of its own, the watcher.

`node.fire()` fires through the real CLI path (the etcd store) and keeps the
fire times; `node.runs()` reads what the recorder run command wrote;
`node.unserved()` lists fires with no run that started after them.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need
from tests.eventually import eventually
from tests.processes import kill_started_with
from trigger.fire import Lineage, fire
from trigger.layout import Layout
from trigger.queue.tsp import parse_tsp_list
from trigger.records import RunRecord
from trigger.results import list_runs
from trigger.store import open_store

RECORDER = Path(__file__).with_name("recorder.py")


class Node:
    def __init__(self, tmp: Path, endpoint: str, host: str = "node1.test"):
        self.tmp, self.endpoint, self.host = tmp, endpoint, host
        self.log = tmp / "runs.jsonl"
        self.watch_log = tmp / "watch.log"
        self.env = {**os.environ, "TS_SOCKET": str(tmp / "tsp.sock"), "TMPDIR": str(tmp)}
        self.env.pop("ETCDCTL_ENDPOINTS", None)
        self.store = open_store("etcd", endpoints=[endpoint])
        self.layout = Layout()
        self.fires: list[float] = []
        self.proc: subprocess.Popen | None = None
        self.standby = False  # watchers carry runs out through a standby `trigger run` (--standby)

    def start_watcher(self, run_seconds: float = 0.2, check_interval: float = 0.5, exit_code: int = 0,
                      extra: tuple[str, ...] = (), before: str = "", launcher: tuple[str, ...] = ()):
        """`before`: a shell command the run command starts with (the recorder then replaces it);
        `launcher`: what the watcher is started under (e.g. `unshare -p -f`)."""
        run_cmd = f"{sys.executable} {RECORDER} {self.log} {run_seconds} {exit_code}"
        if before:
            run_cmd = shlex.join(["sh", "-c", f"{before}\nexec {run_cmd}"])
        self.proc = subprocess.Popen(
            [*launcher, sys.executable, "-m", "trigger", "watch", "--host", self.host, "--queue", "tsp",
             "--endpoints", self.endpoint, "--run-cmd", run_cmd,
             "--check-interval", str(check_interval), "--standby" if self.standby else "--no-standby", *extra],
            env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.watch_log, "a"),
            start_new_session=True,
        )
        return self.proc

    def kill_watcher(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def fire(self, name: str = "refresh") -> float:
        return self.fire_entry(name).fired_at

    def fire_entry(self, name: str = "refresh"):
        entry = fire(self.store, self.layout, name, [self.host], Lineage(), "tester")
        self.fires.append(entry.fired_at)
        return entry

    def runs(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def unserved(self) -> list[float]:
        starts = [r["start"] for r in self.runs()]
        return [f for f in self.fires if not any(s > f for s in starts)]

    def started(self) -> list[dict]:
        """Every command that began, also one killed midway (the recorder's .starts)."""
        return _json_lines(Path(f"{self.log}.starts"))

    def intervals(self) -> list[tuple[float, float | None, str]]:
        """(start, end, run id) of every command that began; end None while
        unknown (still running, or killed without a chance to say so)."""
        ended = self.runs() + _json_lines(Path(f"{self.log}.stopped"))
        ends = {(r["run_id"], r["start"]): r["end"] for r in ended}
        return [(s["start"], ends.get((s["run_id"], s["start"])), s["run_id"]) for s in self.started()]

    def run_records(self) -> list[RunRecord]:
        """Every run record of the host, active or finished (moved to P/done/)."""
        return list_runs(self.store, self.layout, self.host)[0]

    def kill_processes(self) -> None:
        """SIGKILL every process started with this node's TS_SOCKET: the
        watchers, the tsp server and its jobs, also the jobs that outlive
        `tsp -K` (a killed server leaves its running job alive)."""
        kill_started_with("TS_SOCKET", self.env["TS_SOCKET"])

    def wait_served(self, timeout: float = 30.0) -> list[float]:
        """[] once every fire has a run that started after it, else the unserved ones."""
        try:
            eventually(lambda: not self.unserved(), timeout, interval=0.1)
        except AssertionError:
            pass
        return self.unserved()

    def wait_in_sync(self, timeout: float = 20.0) -> None:
        """Until the watcher has read its inbox and watches it."""
        eventually(lambda: self.watch_log.exists() and "in sync at revision" in self.watch_log.read_text(),
                   timeout, "the watcher to log 'in sync'")

    def wait_idle(self, timeout: float = 20.0) -> None:
        """Until task-spooler holds no queued or running job and each run logged its end."""
        def idle():
            return all(job.state == "finished" for job in parse_tsp_list(self.tsp("-l")))
        eventually(idle, timeout, lambda: f"task-spooler to be idle: {self.tsp('-l')}")

    def tsp(self, *args: str) -> str:
        return subprocess.run(["tsp", *args], env=self.env, capture_output=True, text=True).stdout

    def close(self):
        self.kill_watcher()
        subprocess.run(["tsp", "-K"], env=self.env, capture_output=True)
        self.kill_processes()  # the watcher's standby and any run left behind
        self.store.close()


def _json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def nodes(tmp_path, etcd_server):
    """Four hosts, each with its own watcher and task-spooler, on one etcd."""
    need("tsp", "task-spooler")
    made = []
    try:
        for i in range(1, 5):
            (tmp_path / f"n{i}").mkdir()
            made.append(Node(tmp_path / f"n{i}", etcd_server.endpoint, f"node{i}.test"))
        yield made
    finally:
        for n in made:
            n.close()


@pytest.fixture
def node(tmp_path, etcd_server):
    need("tsp", "task-spooler")
    n = Node(tmp_path, etcd_server.endpoint)
    try:
        yield n
    finally:
        n.close()
