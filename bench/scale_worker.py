"""One process of the scale benchmark: many hosts' real watchers, one etcd connection.

usage: python -m bench.scale_worker ENDPOINT HOSTS_FILE OUT_FILE [MEMBER_TTL [STORE]]

For every host in HOSTS_FILE (one per line) it runs trigger's own
`WatchDaemon` with the real `WatcherCore` and the etcd store, each host in
a thread of its own with its own watch stream, all on one connection. The
queue is the one stand-in: a run is carried out in this process, by
trigger's own `start_run` / `finish_run` (the etcd round trips of `trigger
run`), without starting a process per run, which 100 runs a second on two
CPUs could not afford. It writes JSON lines to OUT_FILE as things happen:

    {"w": host, "e": event_id, "t": time}          the watch delivered an entry
    {"r": host, "id": run_id, "t": time, "s": [...]}  a run started (after its ack), serving s

and "ready" on stdout once every host's watch is open. With MEMBER_TTL
each host first registers and then keeps its member key alive as `trigger
watch` does (the daemon's `Registration`: a lease refreshed every ttl/3),
so etcd carries the lease keep-alives of that many watchers. SIGTERM stops it.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from trigger.core import WatcherCore
from trigger.fire import new_event_id
from trigger.layout import Layout
from trigger.runner import finish_run, start_run
from trigger.store import open_store
from trigger.store.base import Put

RUNNERS = 8  # threads carrying out runs, shared by the process's hosts


class Journal:
    def __init__(self, path: str):
        self._f = open(path, "a", buffering=1)
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._f.write(line)

    def close(self) -> None:
        with self._lock:
            self._f.close()


class RecordingStore:
    """The etcd store, with watch deliveries of inbox entries timestamped."""

    def __init__(self, store, layout: Layout, host: str, journal: Journal, opened):
        self._store, self._layout, self._host = store, layout, host
        self._journal, self._opened = journal, opened

    def __getattr__(self, name):
        return getattr(self._store, name)

    def watch_prefix(self, prefix, start_revision, callback):
        def seen(payload):
            if isinstance(payload, list):
                t = time.time()
                for change in payload:
                    if isinstance(change, Put):
                        kind, name = self._layout.classify(self._host, change.key)
                        if kind == "entry":
                            self._journal.write({"w": self._host, "e": name, "t": t})
            callback(payload)

        watch = self._store.watch_prefix(prefix, start_revision, seen)
        self._opened(self._host)
        return watch


class InProcessQueue:
    """A host's run queue: runs one at a time, through trigger's runner functions."""

    def __init__(self, host: str, store, layout: Layout, pool: ThreadPoolExecutor, journal: Journal):
        self.host, self.store, self.layout, self.pool, self.journal = host, store, layout, pool, journal
        self._live: set[str] = set()
        self._lock = threading.Lock()  # one run of a host at a time, as tsp does
        self._live_lock = threading.Lock()

    def enqueue(self, run_id: str, argv: list[str]) -> None:
        with self._live_lock:
            self._live.add(run_id)
        self.pool.submit(self._run, run_id)

    def live_run_ids(self) -> frozenset[str]:
        with self._live_lock:
            return frozenset(self._live)

    def _run(self, run_id: str) -> None:
        try:
            with self._lock:
                record = start_run(self.store, self.layout, self.host, run_id, time.time())
                self.journal.write({"r": self.host, "id": run_id, "t": time.time(), "s": list(record.served)})
                finish_run(self.store, self.layout, record, 0, time.time())
        except Exception as exc:  # the watcher marks it lost and queues another
            print(f"scale worker: run {run_id} on {self.host}: {exc!r}", file=sys.stderr)
        finally:
            with self._live_lock:
                self._live.discard(run_id)


def main() -> int:
    from trigger.procedures import Registration
    from trigger.watch import WatchDaemon

    endpoint, hosts_file, out = sys.argv[1:4]
    member_ttl = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    store_name = sys.argv[5] if len(sys.argv) > 5 else "etcd"  # or etcd-grpc
    hosts = [h.strip() for h in open(hosts_file) if h.strip()]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    layout = Layout()
    store = open_store(store_name, endpoints=[endpoint])
    journal = Journal(out)
    pool = ThreadPoolExecutor(RUNNERS, thread_name_prefix="run")
    opened: set[str] = set()
    opened_lock = threading.Lock()

    def on_open(host: str) -> None:
        with opened_lock:
            opened.add(host)

    daemons = []
    for host in hosts:
        queue = InProcessQueue(host, store, layout, pool, journal)
        core = WatcherCore(host, layout, lambda: new_event_id())
        registration = Registration(layout, host, ttl=member_ttl) if member_ttl else None
        daemon = WatchDaemon(RecordingStore(store, layout, host, journal, on_open), queue, core,
                             lambda run_id: [], check_interval=5.0, registration=registration)
        threading.Thread(target=daemon.run_forever, name=f"watch {host}", daemon=True).start()
        daemons.append(daemon)
    while not stop.is_set() and len(opened) < len(hosts):
        stop.wait(0.05)
    print("ready", flush=True)
    stop.wait()
    for daemon in daemons:
        daemon.stop()
    pool.shutdown(wait=True, cancel_futures=True)
    journal.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
