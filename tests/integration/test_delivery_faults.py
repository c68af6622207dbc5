"""The faults real nodes have, each shown with real etcd, task-spooler,
`trigger watch` and `trigger run` (issue 12, failures 1 to 8).

What every test checks is what a user would: a fire is served by a run that
started after it and ran its command to its end (the recorder's run log,
joined with the run records in etcd by run id); a host never runs two
commands at once (the recorder's start and end times); nothing is wedged.
Partitions go through `tests.proxy.TcpProxy`. Two tests drive `trigger run`'s
procedure in-process, where a fault must hit one exact store call; each
says why.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import need, need_root
from tests.eventually import eventually
from tests.processes import kill_started_with
from tests.integration.conftest import RECORDER, Node
from tests.proxy import TcpProxy
from trigger.coordination import key_part
from trigger.driver import RealDriver
from trigger.fire import Lineage, fire
from trigger.policy import RunPolicy
from trigger.procedures import triggered_run
from trigger.queue.tsp import parse_tsp_list
from trigger.records import Entry, RunRecord, parse_run
from trigger.results import result_of, runs_serving
from trigger.runner import start_command
from trigger.store import open_store
from trigger.store.base import PutOp, UnavailableError

pytestmark = [pytest.mark.etcd, pytest.mark.tsp]

CHECK = 0.3  # --check-interval of every watcher here, unless a test says otherwise
MEMBER_TTL = ("--member-ttl", "2")
RUN_LEASE = ("--run-lease-ttl", "8")  # a dead run's lock and slots go after 8 s, not 30
ETCD_REQUEST_LIMIT = int(1.5 * 1024 * 1024)  # etcd's default --max-request-bytes


class Cluster:
    """Nodes (each its own tsp server and run log) and proxies on one etcd;
    `close()` removes every process they started, also after a failure."""

    def __init__(self, tmp: Path, endpoint: str):
        self.tmp, self.endpoint = tmp, endpoint
        self.nodes: list[Node] = []
        self.proxies: list[TcpProxy] = []

    def node(self, host: str) -> Node:
        (self.tmp / host).mkdir()
        node = Node(self.tmp / host, self.endpoint, host)
        self.nodes.append(node)
        return node

    def proxy(self, port: int) -> TcpProxy:
        proxy = TcpProxy(port).start()
        self.proxies.append(proxy)
        return proxy

    def close(self) -> None:
        for node in self.nodes:
            node.kill_processes()
            node.close()
        for proxy in self.proxies:
            proxy.close()


@pytest.fixture
def cluster(tmp_path, etcd_server):
    need("tsp", "task-spooler")
    made = Cluster(tmp_path, etcd_server.endpoint)
    try:
        yield made
    finally:
        made.close()


# -- what a user checks ------------------------------------------------------------


def fire_at(node: Node, name: str = "refresh", **options) -> Entry:
    """One fire at the node's host, as `trigger fire` writes it; kept in node.fires."""
    entry = fire(node.store, node.layout, name, [node.host], Lineage(), "tester", **options)
    node.fires.append(entry.fired_at)
    return entry


def unserved(node: Node, fires: dict[str, float]) -> list[str]:
    """The fires (event id -> fired at) not served by a run that started
    after the fire and ran its command to its end: the run `trigger fire
    --wait` and `trigger history` name for the fire has finished, and its
    command wrote its end to the run log."""
    ran_to_end = {r["run_id"]: r["start"] for r in node.runs()}
    serving = runs_serving(node.run_records())
    left = []
    for event_id, fired_at in fires.items():
        run = serving.get(event_id, {}).get(node.host)
        finished = run is not None and result_of(node.host, run).state in ("ok", "failed")
        if not (finished and ran_to_end.get(run.run_id, 0.0) > fired_at):
            left.append(event_id)
    return left


def wait_all_served(node: Node, fires: dict[str, float], timeout: float) -> list[str]:
    """[] once every fire is served to the end; else the ids still unserved."""
    try:
        eventually(lambda: not unserved(node, fires), timeout, interval=0.2)
    except AssertionError:
        pass
    return unserved(node, fires)


def overlaps(*nodes: Node) -> list[tuple]:
    """Pairs of commands whose runs overlapped in time; one whose end is
    unknown is taken as still running."""
    spans = sorted((start, math.inf if end is None else end, run_id)
                   for node in nodes for start, end, run_id in node.intervals())
    return [(a, b) for a, b in itertools.combinations(spans, 2) if b[0] < a[1]]


def lost_without_lease(node: Node) -> list[str]:
    """Run records marked lost that would stay for ever: every record needs a bound."""
    items, _ = node.store.get_prefix(node.layout.runs_prefix(node.host))
    return [kv.key for kv in items if kv.lease == 0 and parse_run(kv.value).state == "lost"]


def one_run_started(cluster: Cluster, standby: bool, run_seconds: float,
                    extra: tuple[str, ...]) -> tuple[Node, Entry, dict]:
    """A node whose watcher (on the standby path or the cold one) started a
    run of `run_seconds` for one fire: the node, the fire, the command's start."""
    node = cluster.node("node1.test")
    node.standby = standby
    node.start_watcher(run_seconds=run_seconds, check_interval=CHECK, extra=extra)
    node.wait_in_sync()
    entry = fire_at(node)
    (started,) = eventually(node.started, what="the run to start")
    return node, entry, started


def job_pid(node: Node, job: str) -> int | None:
    """The pid of a running tsp job; None before it has one (`tsp -p` says 0
    then, and kill(0) would hit our own process group)."""
    text = node.tsp("-p", job).strip()
    return int(text) if text.isdigit() and int(text) > 1 else None


def log_tail(node: Node, lines: int = 8) -> str:
    """The watcher's last words, for a failure message."""
    text = node.watch_log.read_text() if node.watch_log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def all_ended(*nodes: Node) -> bool:
    return all(end is not None for node in nodes for _, end, _ in node.intervals())


# -- 1. a queued run lost with its tsp server, while fires keep coming -----------------


@pytest.mark.slow
def test_a_lost_queued_run_is_noticed_within_the_check_interval_while_fires_keep_coming(cluster):
    check = 2.0  # longer than the 0.7 s between fires: each fire used to postpone the re-read
    node = cluster.node("node1.test")
    node.start_watcher(run_seconds=0.1, check_interval=check, extra=MEMBER_TTL)
    node.wait_in_sync()
    blocker = node.tsp("sleep", "60").strip()  # holds tsp's one slot: our run stays queued
    blocker_pid = eventually(lambda: job_pid(node, blocker), what="the blocker's pid")
    try:
        node.fire()
        eventually(lambda: any(j.run_id and j.state == "queued" for j in parse_tsp_list(node.tsp("-l"))),
                   what="the run to wait in tsp's queue")
        node.tsp("-K")  # the server goes, and with it the queued run
    finally:
        os.kill(blocker_pid, signal.SIGKILL)  # a running job outlives its server
    lost_at = time.time()
    while time.time() < lost_at + check + 5:
        node.fire()
        time.sleep(0.7)  # the pace of the fires, not a synchronisation
    firing_stopped = time.time()
    first = min((s["start"] for s in node.started() if s["start"] > lost_at), default=None)
    assert first is not None and first < firing_stopped, \
        f"no run started in the {firing_stopped - lost_at:.1f} s of fires after the queued run " \
        f"was lost:\n{log_tail(node)}"
    # Noticed: the watcher queued a new run (its record says when), within
    # the check interval and the time to ask tsp, however busy the machine.
    queued = min(r.queued_at for r in node.run_records() if r.queued_at and r.queued_at > lost_at)
    assert queued - lost_at <= check + 1.0, f"the loss was noticed {queued - lost_at:.1f} s after it"
    assert node.wait_served() == []


def test_the_proxy_cuts_and_heals_a_connection_to_etcd(cluster, etcd_server):
    """The partition the next test relies on: a store through the proxy
    fails at once while cut (refused, not silent) and works again healed."""
    proxy = cluster.proxy(etcd_server.client_port)
    timeout = 20.0
    store = open_store("etcd", endpoints=[proxy.endpoint], timeout=timeout)
    try:
        store.put("/proxy/x", b"1")
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(UnavailableError):
            store.get("/proxy/x")
        # Refused: not the store's timeout waited out (silent would take 20 s).
        assert time.monotonic() - started < timeout / 2
        proxy.heal()
        assert eventually(lambda: _get_quietly(store, "/proxy/x"), 3 * timeout, "a read once healed").value == b"1"
    finally:
        store.close()


def _get_quietly(store, key):
    try:
        return store.get(key)
    except UnavailableError:
        return None


# -- 2. --serial across two hosts, the slot holder cut off from etcd -----------------------


@pytest.mark.slow
@pytest.mark.parametrize("partition", ["cut", "black_hole"])
def test_serial_runs_never_overlap_when_the_slot_holder_loses_etcd(cluster, etcd_server, partition):
    """Cut: every endpoint refuses at once. Black hole (issue 21, failure 2):
    three endpoints accept and never answer, so a renewal that tried each
    with the store's 5 s timeout took 15 s, longer than the whole lease."""
    proxies = [cluster.proxy(etcd_server.client_port) for _ in range(3)]
    a, b = cluster.node("a.test"), cluster.node("b.test")
    # a's watcher and the runs it queues reach etcd only through the proxies
    # (the last --endpoints wins); its run outlasts the slot's lease.
    a.start_watcher(run_seconds=14, check_interval=CHECK,
                    extra=(*MEMBER_TTL, *RUN_LEASE, "--endpoints", ",".join(p.endpoint for p in proxies)))
    b.start_watcher(run_seconds=1, check_interval=CHECK, extra=(*MEMBER_TTL, *RUN_LEASE))
    a.wait_in_sync()
    b.wait_in_sync()
    fire_a = fire_at(a, "deploy", max_concurrent=1)
    eventually(a.started, what="a's run to start: it holds the slot")
    fire_b = fire_at(b, "deploy", max_concurrent=1)  # waits for the slot
    for proxy in proxies:
        getattr(proxy, partition)()
    eventually(b.runs, 45, "b's run to get the slot and end")
    for proxy in proxies:
        proxy.heal()
    assert overlaps(a, b) == [], "two hosts of a --serial trigger ran at once"
    assert wait_all_served(a, {fire_a.id: fire_a.fired_at}, 45) == [], \
        "the cut-off run's fire was not served again by a run that ran to its end"
    assert unserved(b, {fire_b.id: fire_b.fired_at}) == []
    eventually(lambda: all_ended(a, b), 20, "every command to end")
    assert overlaps(a, b) == []


# -- 3. the tsp server killed while a run runs, then a fire ---------------------------------


def test_a_killed_tsp_server_never_gives_two_runs_at_once(cluster):
    node = cluster.node("node1.test")
    node.start_watcher(run_seconds=3, check_interval=CHECK, extra=MEMBER_TTL)
    node.wait_in_sync()
    node.fire()
    eventually(node.started, what="the first run to start")
    node.tsp("-K")  # its running job lives on; the next tsp call starts an empty server
    second = fire_at(node)
    assert wait_all_served(node, {second.id: second.fired_at}, 30) == [], \
        "the fire after the kill was not served by a run that started after it and ran to its end"
    eventually(lambda: all_ended(node), 20, "every command to end")
    assert overlaps(node) == [], "the host ran two commands at once"


# -- 4. the running `trigger run` killed during its command -----------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("standby", [False, True], ids=["cold", "standby"])
def test_a_run_killed_during_its_command_gives_its_fires_back(cluster, standby):
    node, entry, started = one_run_started(cluster, standby, 2, (*MEMBER_TTL, *RUN_LEASE))
    runner = os.getpgid(started["ppid"])  # tsp gives each job a process group; a standby has a session
    assert started["pgid"] != os.getpgid(0) and runner != os.getpgid(0)
    for group in (runner, started["pgid"]):  # `trigger run` and its command, as an OOM kill would
        os.killpg(group, signal.SIGKILL)
    assert wait_all_served(node, {entry.id: entry.fired_at}, 30) == [], \
        f"the killed run's fire was not served again by a run that ran to its end:\n{log_tail(node)}"
    assert lost_without_lease(node) == []


# -- 5. and 6.: a run's write applied by etcd, then its answer lost, or the run dead -----------


class FirstRecordWrite:
    """The real store, until the run first writes its own record (a put or a
    transaction holding it): etcd applies that write, then the caller gets
    `then` raised instead of the answer. A `Crash` leaves the store dead:
    it reaches etcd no more, as a crashed process with all its threads."""

    def __init__(self, store, run_key: str, then: Callable[[], BaseException]):
        self._store, self._run_key, self._then = store, run_key, then
        self.hit = self.dead = False

    def __getattr__(self, name):
        real = getattr(self._store, name)

        def call(*args, **kwargs):
            if self.dead:
                raise Crash(f"{name} after the crash")
            return real(*args, **kwargs)

        return call

    def put(self, key, value, lease=0):
        return self._write(key == self._run_key, self._store.put, key, value, lease)

    def txn(self, ops, *args, **kwargs):
        writes_record = any(isinstance(op, PutOp) and op.key == self._run_key for op in ops)
        return self._write(writes_record, self._store.txn, ops, *args, **kwargs)

    def _write(self, writes_record: bool, write, *args, **kwargs):
        if self.dead:
            raise Crash("a write after the crash")
        result = write(*args, **kwargs)
        if writes_record and not self.hit:
            self.hit = True
            fault = self._then()
            self.dead = isinstance(fault, Crash)
            raise fault
        return result


def answer_lost() -> UnavailableError:
    return UnavailableError("etcd txn: no answer within 5s; the write may or may not have been applied")


class Crash(BaseException):
    """Not an error `trigger run` handles: the process dies here."""


# -- 5. an acknowledgement applied but answered with a timeout ------------------------------


def test_a_retried_acknowledgement_keeps_the_served_fires_and_the_hop(cluster):
    """In-process: the answer must be lost after etcd applied exactly this
    one transaction; a proxy cuts whole connections and cannot pick one
    answer. `trigger.procedures.triggered_run` is what `trigger run` runs,
    on the same real-time driver, against the real etcd; its command is a
    real `trigger fire` subprocess that shows the hop it was given."""
    node = cluster.node("node1.test")
    chain = ("h1.test", "h2.test", "h3.test", "h4.test")
    entry = fire(node.store, node.layout, "loop", [node.host], Lineage(4, chain), "tester", ttl=5)
    assert entry.hop == 5
    run_id = "r-ambiguous"
    run_key = node.layout.run_key(node.host, run_id)
    node.store.put(run_key, RunRecord(run_id, node.host, "queued", queued_at=time.time()).encode())
    store = FirstRecordWrite(node.store, run_key, answer_lost)
    fire_inside = [sys.executable, "-m", "trigger", "fire", "again", "--hosts", node.host,
                   "--endpoints", node.endpoint, "--retention", "0"]
    driver = RealDriver(store, execute=lambda record: start_command(fire_inside, record), tell=lambda note: None)
    code = driver.run(triggered_run(node.layout, node.host, run_id, policy=RunPolicy(first_delay=0.05)))
    assert store.hit, "the fault was not injected: the run never wrote its record"
    assert code == 3, f"the fire inside the run was not refused by the loop TTL (exit {code})"
    (record,) = [r for r in node.run_records() if r.run_id == run_id]
    assert entry.id in record.served and record.hop == 5, record
    refused, _ = node.store.get_prefix(node.layout.prefix + "/refused/")
    assert refused and all(kv.lease for kv in refused), "a refusal is recorded, on a lease"


# -- 6. a crash between the transactions of a large acknowledgement ---------------------------


@pytest.mark.slow
# the crashed run's lease keeper meets the dead store too, and its thread ends with the Crash
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_crash_inside_a_large_acknowledgement_strands_no_fire(cluster):
    """In-process for the crash: it must fall between two transactions of
    one acknowledgement, which no signal sent from outside hits reliably.
    What follows is the real watcher and `trigger run`."""
    node = cluster.node("node1.test")
    fires = {}
    for _ in range(200):
        entry = fire_at(node)
        fires[entry.id] = entry.fired_at
    run_id = "r-crashing"
    run_key = node.layout.run_key(node.host, run_id)
    node.store.put(run_key, RunRecord(run_id, node.host, "queued", queued_at=time.time()).encode())
    run_cmd = [sys.executable, str(RECORDER), str(node.log), "0.1"]
    driver = RealDriver(FirstRecordWrite(node.store, run_key, lambda: Crash("after its first write")),
                        execute=lambda record: start_command(run_cmd, record), tell=lambda note: None)
    with pytest.raises(Crash):  # its lease (8 s) ends with it: the watcher sees the lock go
        driver.run(triggered_run(node.layout, node.host, run_id, policy=RunPolicy(lease_ttl=8)))
    node.start_watcher(run_seconds=0.1, check_interval=CHECK, extra=MEMBER_TTL)
    left = wait_all_served(node, fires, 30)
    assert left == [], \
        f"{len(left)} of 200 fires were never served by a run that ran to its end:\n{log_tail(node)}"


# -- 7. one firer, 14,000 entries with long ids -------------------------------------------------


@pytest.mark.slow
def test_a_huge_inbox_is_served_in_batches_within_etcds_request_limit(cluster):
    node = cluster.node("node1.test")
    now = time.time()
    entries = [Entry(id=f"{i:05d}-" + "x" * 114, trigger="flood", fired_at=now, chain=("tester",),
                     origin="tester") for i in range(14_000)]
    ops = [PutOp(node.layout.entry_key(node.host, e.id), e.encode()) for e in entries]
    for i in range(0, len(ops), 128):
        node.store.txn(ops[i:i + 128])
    node.fires.append(now)
    node.start_watcher(run_seconds=0.1, check_interval=CHECK, extra=MEMBER_TTL)
    left = wait_all_served(node, {e.id: e.fired_at for e in entries}, 40)
    items = [*node.store.get_prefix(node.layout.runs_prefix(node.host))[0],
             *node.store.get_prefix(node.layout.done_prefix(node.host))[0]]
    sizes = sorted(len(kv.value) for kv in items)
    exits = [j.exit_code for j in parse_tsp_list(node.tsp("-l")) if j.run_id and j.state == "finished"]
    assert left == [], f"{len(left)} of 14,000 fires not served; tsp exits {exits[-5:]}"
    assert not sizes or sizes[-1] <= ETCD_REQUEST_LIMIT, f"a run record of {sizes[-1]} bytes"
    assert set(exits) <= {0}, f"runs ended with {sorted(set(exits))}"
    assert lost_without_lease(node) == []


# -- 8. a second watcher for the same host ------------------------------------------------------


@pytest.mark.slow
def test_a_second_watcher_for_a_host_neither_runs_twice_nor_takes_the_first_ones_keys(cluster):
    node = cluster.node("node1.test")
    options = (*MEMBER_TTL, "--elections", "lead")
    member = node.layout.member_key(node.host)
    candidate = node.layout.candidate_key(key_part("lead"), node.host)
    first = node.start_watcher(run_seconds=0.1, check_interval=CHECK, extra=options)
    node.wait_in_sync()
    eventually(lambda: node.store.get(member) and node.store.get(candidate), what="the first's keys")
    second = start_another_watcher(node, "second.log", options)
    # Up once it says so: in sync (a second active watcher) or standing by.
    eventually(lambda: _says(node.tmp / "second.log", "in sync", "standby"), 20, "the second watcher to start")

    fires = {}
    for n in range(1, 4):  # one fire at a time: each must run the command exactly once
        entry = fire_at(node)
        fires[entry.id] = entry.fired_at
        assert wait_all_served(node, fires, 20) == []
        node.wait_idle()
        assert len(node.runs()) == n, f"fire {n} ran the command {len(node.runs()) - n + 1} times"

    second.send_signal(signal.SIGTERM)
    second.wait(10)
    assert node.store.get(member) is not None, "the second watcher's exit deleted the first's member key"
    assert node.store.get(candidate) is not None, "the second watcher's exit deleted the first's candidacy"
    # For two member TTLs: keys that outlive them are held by a live lease.
    assert holds_for(4.0, lambda: node.store.get(member) and node.store.get(candidate)), \
        "the first watcher's keys did not stay"

    standby = start_another_watcher(node, "third.log", options)
    eventually(lambda: _says(node.tmp / "third.log", "in sync", "standby"), 20, "the standby to start")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_at = time.time()
    entry = fire_at(node)
    assert wait_all_served(node, {entry.id: entry.fired_at}, 20) == [], \
        "the standby did not take over from the killed watcher"
    took = max(r["start"] for r in node.runs()) - killed_at
    assert took <= 2 + 4, f"the standby's first run started {took:.1f} s after the kill (member TTL 2 s)"
    standby.send_signal(signal.SIGTERM)
    standby.wait(10)


def start_another_watcher(node: Node, log_name: str, extra: tuple[str, ...],
                          launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    """One more `trigger watch` for the node's host, logging to its own file."""
    watch_log, proc = node.watch_log, node.proc
    node.watch_log = node.tmp / log_name
    try:
        return node.start_watcher(run_seconds=0.1, check_interval=CHECK, extra=extra, launcher=launcher)
    finally:
        node.watch_log, node.proc = watch_log, proc


def holds_for(seconds: float, predicate) -> bool:
    """True if `predicate()` stays true for `seconds` (checked every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.1)
    return True


def _says(log: Path, *words: str) -> bool:
    text = log.read_text() if log.exists() else ""
    return any(w in text for w in words)


# -- issue 21: a run is one execution, and its command dies with it -----------------------------

PATHS = pytest.mark.parametrize("standby", [False, True], ids=["cold", "standby"])


def at_most_once(node: Node) -> list[str]:
    """Run ids whose command began more than once: each is one execution at most."""
    ids = [s["run_id"] for s in node.started()]
    return sorted({i for i in ids if ids.count(i) > 1})


def stopped_run_ids(node: Node) -> set[str]:
    """Runs whose command got SIGTERM (the recorder notes it)."""
    return {r["run_id"] for r in _json_lines_of(Path(f"{node.log}.stopped"))}


def _json_lines_of(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
@PATHS
def test_a_runner_killed_with_sigkill_takes_its_command_with_it_and_its_run_is_never_run_twice(
        cluster, standby):
    """Failure 1: `kill -9` of the standby (or of a cold `trigger run`) left
    its command running past the lease, beside the next run, and a new
    standby ran the same run id a second time."""
    node, entry, started = one_run_started(cluster, standby, 12, (*MEMBER_TTL, *RUN_LEASE))
    os.kill(started["ppid"], signal.SIGKILL)  # the runner alone: its command is not told
    eventually(lambda: started["run_id"] in stopped_run_ids(node), 10,
               "the killed runner's command to be stopped (SIGTERM to its group)")
    assert wait_all_served(node, {entry.id: entry.fired_at}, 60) == [], \
        f"the killed run's fire was not served again by a run that ran to its end:\n{log_tail(node)}"
    eventually(lambda: all_ended(node), 20, "every command to end")
    assert overlaps(node) == [], "the host ran two commands at once"
    assert at_most_once(node) == [], "a run id was carried out twice"


@PATHS
def test_a_killed_queue_job_stops_its_command_and_gives_its_fires_back(cluster, standby):
    """Failure 6: `tsp -k` of the running job consumed its fire (standby:
    the command died of SIGPIPE and the run was recorded failed 141); on the
    cold path the fire came back only once the lease ended. Now the command
    is stopped and the run gives its fires back at once, saying why."""
    node, entry, started = one_run_started(cluster, standby, 6, MEMBER_TTL)
    job = next(j for j in parse_tsp_list(node.tsp("-l")) if j.state == "running")
    node.tsp("-k", str(job.id))
    killed = started["run_id"]
    eventually(lambda: killed in stopped_run_ids(node), 10, "the killed job's command to be stopped")
    record = eventually(lambda: next((r for r in node.run_records() if r.run_id == killed
                                      and r.state != "started"), None), 20, "the killed run's record")
    assert record.state == "lost" and "command stopped" in record.reason, record
    assert wait_all_served(node, {entry.id: entry.fired_at}, 30) == [], \
        f"the killed job's fire was not served by a run that ran to its end:\n{log_tail(node)}"


def test_the_jobs_cat_killed_alone_stops_the_command_and_gives_its_fires_back(cluster):
    """The standby's job is `sh -c 'cat < LINK; ...'`: killing its cat (not the job's sh) must
    still tell the standby its job went: only cat holds the FIFO."""
    node, entry, started = one_run_started(cluster, True, 6, MEMBER_TTL)
    job = next(j for j in parse_tsp_list(node.tsp("-l")) if j.state == "running")
    sh = job_pid(node, str(job.id))
    (cat,) = Path(f"/proc/{sh}/task/{sh}/children").read_text().split()
    assert Path(f"/proc/{cat}/comm").read_text().strip() == "cat"
    os.kill(int(cat), signal.SIGKILL)
    killed = started["run_id"]
    eventually(lambda: killed in stopped_run_ids(node), 10, "the command to be stopped")
    record = eventually(lambda: next((r for r in node.run_records() if r.run_id == killed
                                      and r.state != "started"), None), 20, "the killed run's record")
    assert record.state == "lost" and "command stopped" in record.reason, record
    assert wait_all_served(node, {entry.id: entry.fired_at}, 30) == [], log_tail(node)


@PATHS
@pytest.mark.parametrize("leaves", ["{} &", "setsid -f {}"], ids=["background child", "daemon"])
def test_what_the_command_leaves_behind_neither_holds_the_queue_nor_outlives_its_run(cluster, standby, leaves):
    """Failure 4: the child inherited the standby's FIFO, so the job's `cat`
    (and the host's next run) waited for the child to end. A run is one
    execution: a child left behind, or a daemon in a session of its own,
    ends with its run, and the watcher's log says what it was."""
    node = cluster.node("node1.test")
    node.standby = standby
    sleeper = f"sleep {1000 + os.getpid() % 1000}.{time.time_ns() % 10**6}"  # no other test's
    node.start_watcher(run_seconds=0.2, check_interval=CHECK, extra=MEMBER_TTL, before=leaves.format(sleeper))
    node.wait_in_sync()
    first = fire_at(node)
    assert wait_all_served(node, {first.id: first.fired_at}, 30) == []
    second = fire_at(node)
    assert wait_all_served(node, {second.id: second.fired_at}, 30) == [], \
        f"the next run waited for the first one's background child:\n{node.tsp('-l')}\n{log_tail(node)}"
    alive = subprocess.run(["pgrep", "-f", f"^{sleeper}$"], capture_output=True, text=True).stdout.split()
    assert alive == [], f"{sleeper} outlived its run"
    eventually(lambda: "the command left 1 process behind (pid " in node.watch_log.read_text(), 10,
               lambda: f"the watcher's log does not name what was left:\n{log_tail(node)}")


@PATHS
def test_tsp_shows_the_runs_exit_status(cluster, standby):
    """Through the standby the job was `cat LINK`: `tsp -l` showed cat's 0 for a run whose
    command exited 3, hiding the failure from the operator's own tool. Now the job exits with
    the run's status, as a cold `trigger run` does."""
    node = cluster.node("node1.test")
    node.standby = standby
    node.start_watcher(run_seconds=0.1, check_interval=CHECK, extra=MEMBER_TTL, exit_code=3)
    node.wait_in_sync()
    entry = fire_at(node)
    assert wait_all_served(node, {entry.id: entry.fired_at}, 30) == [], log_tail(node)
    node.wait_idle()
    (job,) = [j for j in parse_tsp_list(node.tsp("-l")) if j.run_id]
    assert job.command.startswith("/bin/sh -c ") == standby, job  # the path the test means
    assert job.exit_code == 3, node.tsp("-l")
    (record,) = [r for r in node.run_records() if r.run_id == job.run_id]
    assert record.exit_code == 3


def test_a_removed_fifo_is_made_again_and_runs_go_on(cluster):
    """Failure 5: with the standby's FIFO removed, every run was queued as
    `cat FIFO` of a missing file and recorded lost, for ever."""
    node = cluster.node("node1.test")
    node.standby = True
    node.start_watcher(run_seconds=0.1, check_interval=CHECK, extra=MEMBER_TTL)
    node.wait_in_sync()
    first = fire_at(node)
    assert wait_all_served(node, {first.id: first.fired_at}, 30) == []
    node.wait_idle()
    (fifo,) = (node.tmp / f"trigger-standby-{os.getuid()}").glob("*.fifo")
    fifo.unlink()  # a /tmp cleaner, an operator
    fires = {}
    for _ in range(3):
        entry = fire_at(node)
        fires[entry.id] = entry.fired_at
        assert wait_all_served(node, fires, 30) == [], f"runs stopped after the FIFO went:\n{log_tail(node)}"
    assert fifo.exists(), "the FIFO was not made again"


def test_a_second_watcher_in_another_pid_namespace_stands_by(cluster):
    """Failure 7: under `unshare -p` a second watcher is pid 1 of its own
    namespace; it could not see the first one's pid, called it dead and
    took the host. Now the namespace is part of a watcher's name, and a
    watcher it cannot look up is never judged dead."""
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "-p", "-f", "true"], capture_output=True) if unshare else None
    if probe is None or probe.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("unshare -p is needed here (util-linux, and the right to make a PID namespace)")
        pytest.skip("unshare -p is not available here")
    node = cluster.node("node1.test")
    first = node.start_watcher(run_seconds=0.1, check_interval=CHECK, extra=MEMBER_TTL)
    node.wait_in_sync()
    member = node.layout.member_key(node.host)
    held = eventually(lambda: node.store.get(member), what="the first watcher's member key")
    second = start_another_watcher(node, "contained.log", MEMBER_TTL, launcher=("unshare", "-p", "-f"))
    eventually(lambda: _says(node.tmp / "contained.log", "standby", "in sync"), 20, "the second watcher to start")
    assert _says(node.tmp / "contained.log", "standby"), (node.tmp / "contained.log").read_text()
    assert holds_for(4.0, lambda: first.poll() is None and node.store.get(member).lease == held.lease), \
        f"the first watcher lost its host:\n{log_tail(node)}"
    entry = fire_at(node)
    assert wait_all_served(node, {entry.id: entry.fired_at}, 20) == []
    os.killpg(second.pid, signal.SIGTERM)  # unshare passes no signal on: its group has the watcher
    second.wait(10)


@PATHS
def test_jobs_that_are_not_trigger_s_in_its_queue_are_named_and_every_fire_is_still_served(cluster, standby):
    """Bad input: a TS_SOCKET shared with other work. Our runs wait behind its
    jobs (task-spooler runs one at a time); the watcher's log says which."""
    node = cluster.node("node1.test")
    node.standby = standby
    node.start_watcher(run_seconds=0.1, check_interval=CHECK, extra=MEMBER_TTL)
    node.wait_in_sync()
    node.tsp("sleep", "3")  # somebody else's job, on the same queue
    entry = fire_at(node)
    assert wait_all_served(node, {entry.id: entry.fired_at}, 30) == [], log_tail(node)
    said = [line for line in node.watch_log.read_text().splitlines() if "not trigger's" in line]
    assert len(said) == 1 and "(sleep 3)" in said[0], log_tail(node)


@PATHS
def test_a_ts_socket_of_another_user_is_not_used_and_every_fire_is_still_served(cluster, standby):
    """Bad input: TS_SOCKET names another user's task-spooler, which would run
    our runs as that user. The watcher says so in one line and queues on a
    socket of its own."""
    need_root()
    node = cluster.node("node1.test")
    node.standby = standby
    theirs = node.tmp / "theirs.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(theirs))
        os.chown(theirs, 65534, 65534)  # nobody's
        node.env["TS_SOCKET"] = str(theirs)
        ours = node.tmp / f"trigger-tsp-{os.getuid()}" / "socket"
        try:
            node.start_watcher(run_seconds=0.1, check_interval=CHECK, extra=MEMBER_TTL)
            node.wait_in_sync()
            entry = fire_at(node)
            assert wait_all_served(node, {entry.id: entry.fired_at}, 30) == [], log_tail(node)
            said = [line for line in node.watch_log.read_text().splitlines() if "belongs to uid 65534" in line]
            assert len(said) == 1 and str(ours) in said[0], log_tail(node)
        finally:
            node.kill_watcher()
            subprocess.run(["tsp", "-K"], env={**node.env, "TS_SOCKET": str(ours)}, capture_output=True)
            kill_started_with("TS_SOCKET", str(ours))
