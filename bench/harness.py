"""Real parts on loopback for the benchmarks, and getting rid of them again.

`Session` owns one temporary directory and every process a benchmark
starts. Each process gets a new session (so a Ctrl-C in the terminal
reaches only the bench, which then cleans up) and inherits the environment
variable TRIGGER_BENCH_TAG with a value unique to this run. `Session.close`
stops what it started, stops every task-spooler server it used, then kills
by pid whatever process still carries the tag (a tsp server that forked
itself away, a run that tsp started) and removes the directory.

`OursNode` is one host as trigger runs it: `trigger watch` with a private
tsp server (TS_SOCKET and TMPDIR in the node's directory) running `trigger
run -- recorder.sh`. `SeedNode` is one host as the seed ran it:
bench/seed/watch-loop.sh with a private tsp server running recorder.sh.
recorder.sh appends the run's start time to the node's log.
"""

from __future__ import annotations

import http.client
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlencode, urlsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RECORDER = BENCH / "recorder.sh"
SEED_LOOP = BENCH / "seed" / "watch-loop.sh"
SEED_FIRE = BENCH / "seed" / "fire.sh"
REAPER = BENCH / "reaper.py"
TAG_VAR = "TRIGGER_BENCH_TAG"


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    """Poll until predicate() is true; False on timeout (no exception: the
    benchmarks report what did not happen rather than stop)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass(frozen=True)
class Code:
    """Which trigger a node runs: this checkout, or an older one given with
    `--before DIR` (its own `.venv`), measured side by side in the same run."""

    label: str
    repo: Path
    python: str


THIS = Code("ours", REPO, sys.executable)


def before_code(path: str) -> Code:
    repo = Path(path).resolve()
    python = repo / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"bench: --before {path}: no {python} (run scripts/setup.sh there)")
    return Code("before", repo, str(python))


def byte_compile(code: Code) -> None:
    """Compile the side's trigger/ to .pyc, as pip does when it installs a
    package: with PYTHONDONTWRITEBYTECODE set (as on the machines here)
    every `trigger` process would compile its modules again and the bench
    would time the compiler."""
    subprocess.run([code.python, "-m", "compileall", "-q", str(code.repo / "trigger")],
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                   check=True, timeout=120, stdout=subprocess.DEVNULL)


def base_env(code: Code = THIS) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ETCDCTL_ENDPOINTS", None)
    env.pop("ETCDCTL_API", None)
    env["PYTHONPATH"] = str(code.repo)
    # Not the current directory first on sys.path (python -P): a --before
    # side started from this checkout would import this checkout's trigger.
    env["PYTHONSAFEPATH"] = "1"
    return env


class Session:
    def __init__(self, keep: bool = False):
        self.tag = uuid.uuid4().hex
        os.environ[TAG_VAR] = self.tag  # inherited by everything started from here on
        self.root = Path(tempfile.mkdtemp(prefix="trigger-bench-"))
        self.keep = keep
        self._procs: list[subprocess.Popen] = []
        self._tsp_envs: list[dict] = []
        self._closers: list[Callable[[], None]] = []
        self._closed = False

    def dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=False)
        return path

    def spawn(self, argv: list[str], env: dict | None = None, stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=env or base_env(), stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=stderr, start_new_session=True)
        self._procs.append(proc)
        return proc

    def uses_tsp(self, env: dict) -> None:
        self._tsp_envs.append(env)

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    @staticmethod
    def stop(proc: subprocess.Popen, grace: float = 2.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds."""
        if proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception as exc:  # cleanup goes on whatever failed
                print(f"bench: cleanup: {exc!r}", file=sys.stderr)
        for proc in reversed(self._procs):
            self.stop(proc, grace=1.0)
        for env in self._tsp_envs:
            try:
                subprocess.run(["tsp", "-K"], env=env, capture_output=True, timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        kill_tagged(self.tag)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tagged_pids(tag: str) -> list[int]:
    """Pids of processes (not this one) whose environment carries our tag."""
    needle = f"{TAG_VAR}={tag}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def kill_tagged(tag: str) -> int:
    killed = 0
    for _ in range(3):  # a dying tsp server may still fork once
        pids = tagged_pids(tag)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return killed


# -- etcd ----------------------------------------------------------------------


def start_etcd(session: Session, name: str, v2: bool = False):
    """A fresh single-member etcd on free loopback ports, stopped on close."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.etcd_server import EtcdServer

    server = EtcdServer(session.dir(name), extra_args=("--enable-v2",) if v2 else ())
    session.on_close(server.close)
    return server.start()


class V2Client:
    """Writes v2 keys over one kept-alive HTTP connection: what `etcdctl set`
    sends, without its process start (for fires timed to the millisecond)."""

    def __init__(self, endpoint: str):
        parts = urlsplit(endpoint)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def set(self, key: str, value: str) -> None:
        self.conn.request("PUT", "/v2/keys" + quote(key), body=urlencode({"value": value}),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = self.conn.getresponse()
        body = response.read()
        if response.status >= 300:
            raise RuntimeError(f"v2 set {key}: HTTP {response.status}: {body[:200]!r}")

    def close(self) -> None:
        self.conn.close()


# -- nodes ---------------------------------------------------------------------


class RunLog:
    """The lines recorder.sh appended: (start time, run id)."""

    def __init__(self, path: Path):
        self.path = path

    def entries(self) -> list[tuple[float, str]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                try:
                    out.append((float(parts[0]), parts[1]))
                except ValueError:
                    continue  # a line being written
        return out

    def starts(self) -> list[float]:
        return sorted(t for t, _ in self.entries())

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


class _Node:
    """What both kinds of node share: a directory, a tsp server, a run log."""

    kind = "node"

    def __init__(self, session: Session, endpoint: str, host: str, run_seconds: float, code: Code = THIS):
        self.session, self.endpoint, self.host = session, endpoint, host
        self.run_seconds = run_seconds
        self.code = code
        self.dir = session.dir(f"{self.kind}-{host}")
        self.log = RunLog(self.dir / "runs.log")
        self.env = {**base_env(code), "TS_SOCKET": str(self.dir / "tsp.sock"), "TMPDIR": str(self.dir),
                    "TS_MAXFINISHED": "10000"}
        session.uses_tsp(self.env)
        self.proc: subprocess.Popen | None = None  # reaper.py, the node's process group leader
        self.pid: int | None = None  # the watcher (ours) or the loop's bash (seed)
        self.fires: list[float] = []

    def _spawn(self, argv: list[str], log_name: str) -> None:
        """Start argv under reaper.py, which counts the CPU of the runs it leaves behind."""
        pidfile = self.dir / "main.pid"
        self.proc = self.session.spawn([sys.executable, str(REAPER), str(pidfile), *argv], env=self.env,
                                       stderr=open(self.dir / log_name, "ab"))
        if not wait_for(pidfile.exists, 10.0, 0.01):
            raise RuntimeError(f"{self.kind} node {self.host} did not start")
        self.pid = int(pidfile.read_text())

    def run_cmd(self) -> list[str]:
        return ["/bin/bash", str(RECORDER), str(self.log.path), f"{self.run_seconds:g}"]

    def tsp_jobs(self):
        from trigger.queue.tsp import parse_tsp_list

        done = subprocess.run(["tsp", "-l"], env=self.env, capture_output=True, text=True, timeout=10)
        return parse_tsp_list(done.stdout)

    def tsp_idle(self) -> bool:
        return not any(j.state in ("queued", "running", "allocating") for j in self.tsp_jobs())

    def wait_run_after(self, t: float, timeout: float) -> float | None:
        """The first run start after t, waiting up to `timeout` for it."""
        found: list[float] = []

        def seen() -> bool:
            later = [s for s in self.log.starts() if s > t]
            if later:
                found.append(later[0])
            return bool(later)

        return found[0] if wait_for(seen, timeout, 0.003) else None

    def unserved(self) -> list[float]:
        from .stats import fire_to_run

        return fire_to_run(self.fires, self.log.starts())[1]

    def stop(self) -> None:
        if self.proc is not None:
            Session.stop(self.proc)
        try:
            subprocess.run(["tsp", "-K"], env=self.env, capture_output=True, timeout=5)
        except subprocess.TimeoutExpired:
            pass  # Session.close kills what is left by its tag


class OursNode(_Node):
    kind = "ours"

    def __init__(self, session: Session, endpoint: str, host: str, store, run_seconds: float = 0.0,
                 check_interval: float = 0.5, code: Code = THIS, extra: tuple[str, ...] = ()):
        super().__init__(session, endpoint, host, run_seconds, code)
        self.store = store  # the bench's own store, for fires
        self.check_interval = check_interval
        self.extra = extra  # more `trigger watch` options

    def start(self) -> "OursNode":
        argv = [self.code.python, "-m", "trigger", "watch", "--host", self.host, "--queue", "tsp",
                "--endpoints", self.endpoint, "--run-cmd", shlex.join(self.run_cmd()),
                "--check-interval", f"{self.check_interval:g}", *self.extra]
        self._spawn(argv, "watch.log")
        return self

    def standby_pids(self) -> list[int]:
        """The watcher's standby `trigger run` (trigger/queue/standby.py), a child it does not wait for."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            return []
        found = []
        for pid in map(int, children):
            try:
                if b"--standby" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                    found.append(pid)
            except OSError:
                continue
        return found

    def fire(self) -> float:
        """One fire to this host through trigger's fire path; its fire time."""
        from trigger.fire import Lineage, fire
        from trigger.layout import Layout

        entry = fire(self.store, Layout(), "bench", [self.host], Lineage(), "bench")
        self.fires.append(entry.fired_at)
        return entry.fired_at


class SeedNode(_Node):
    kind = "seed"

    def __init__(self, session: Session, endpoint: str, host: str, v2: V2Client, run_seconds: float = 0.0):
        super().__init__(session, endpoint, host, run_seconds)
        self.key = f"/puppet_trigger/{host}"
        self.v2 = v2

    def start(self) -> "SeedNode":
        argv = ["/bin/bash", str(SEED_LOOP), self.endpoint, self.key, *self.run_cmd()]
        self._spawn(argv, "loop.log")
        return self

    def fire(self) -> float:
        """One v2 set of the host's key over HTTP (no process start)."""
        t = time.time()
        self.v2.set(self.key, f"{t:.6f}")
        self.fires.append(t)
        return t

    def fire_process(self) -> float:
        """One fire as the seed's provider made it: an `etcdctl set` process."""
        t = time.time()
        subprocess.run([str(SEED_FIRE), self.endpoint, self.key, f"{t:.6f}"], env=self.env,
                       check=True, stdin=subprocess.DEVNULL, timeout=10)
        self.fires.append(t)
        return t

    def runs_queued_or_done(self) -> int:
        """Runs the seed asked for: every job tsp holds, whatever its state."""
        return len(self.tsp_jobs())


def warm_up(node: _Node, timeout: float = 20.0) -> bool:
    """Fire until a run follows (the watcher is up); then wait for the queue to empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = node.fire()
        if node.wait_run_after(t, min(3.0, max(0.1, deadline - time.monotonic()))) is not None:
            wait_for(node.tsp_idle, 10.0, 0.02)
            node.fires.clear()
            return True
    return False


# -- process accounting ----------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int, children: bool = True) -> float:
    """CPU seconds of a process (and of its children it has waited for)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + ((cutime + cstime) if children else 0)) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def proc_pss_mb(pid: int) -> float:
    """Proportional set size: pages shared with other processes count for their share only,
    so the PSS of a node's processes adds up to the memory they take together."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return 0.0


def proc_switches(pid: int) -> int:
    """Context switches of all the process's threads (a poll loop shows here)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids
