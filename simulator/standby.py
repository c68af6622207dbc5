"""A node's simulated standby `trigger run` (`trigger watch --standby`, `watcher: {standby: true}`).

The same decisions as trigger/queue/standby.py, from `trigger.procedures`:
the watcher queues each run through `standby_route` (through the standby,
or cold while none lives, starting one), sweeps its run links with
`sweep_links` at every look at the queue (a live run and no standby: start
one), and lets an unused standby go when `standby_linger_left` says so. The
standby takes the run of each job that opens its FIFO with `standby_run_id`
and carries it out with the same `triggered_run` as a cold run.

What is modelled: a job (`sh -c 'cat < LINK ...'`) waits in its open of the
FIFO until a standby opens it, and ends when the standby closes it (its
run ended, or the standby died: the command never holds the FIFO). A run
through the standby starts STANDBY_START after its job, a cold one
COLD_START after (a new Python), a standby can serve COLD_START after it
was started. A standby killed in a run (`kill_run`) leaves its command to
the watchdog, which stops it `stop_grace` later; the run's lease keeps the
host's lock until it ends, then the watcher judges the run lost. Not
modelled: the FIFO removed or renamed, inotify's absence (every job's
link is told).
"""

from __future__ import annotations

from collections import deque

from simpy import Interrupt

from trigger.policy import RUN
from trigger.procedures import COLD, STANDBY, standby_linger_left, standby_route, standby_run_id, \
    sweep_links, triggered_run
from trigger.queue.standby_runner import JOB_GONE

from .driver import SimDriver

# docs/benchmarks.md, run 10 (a quiet machine): fire→run start p50 9.98 ms through the
# standby, 112 ms cold, where the fire's watch delivery and decision take about 2 ms.
STANDBY_START = 0.008  # tsp starts the job, cat opens the link, the standby wakes
COLD_START = 0.110  # tsp starts `python -m trigger run`: Python's start-up, imports, a connection


class SimStandby:
    """The standby queue of one node: task-spooler (`tsp`, a FakeTaskSpooler) and the
    standby process it keeps. Offers the watcher what FakeTaskSpooler does (`push`,
    `live_run_ids`)."""

    def __init__(self, env, node, tsp, linger: float):
        self.env, self.node, self.tsp, self.linger = env, node, tsp, linger
        self.alive = False  # a standby process lives
        self.links: set[str] = set()  # run ids queued as standby jobs whose link is there
        self.waiting: deque = deque()  # jobs in their open of the FIFO: (run id, closed event)
        self.served: deque[str] = deque(maxlen=64)  # the live standby's
        self.used = 0.0
        self._process = None  # the standby's SimPy process
        self._driver: SimDriver | None = None  # its run in progress
        self._closing = None  # the event that ends the job it serves (its FIFO closed)
        self._gone = False  # that job was killed (tsp -k)
        self.jobs: set[str] = set()  # run ids queued as standby jobs, until their job ends
        self._arrived = env.event()  # a job opened the FIFO
        self._leaving = False
        self._generation = 0  # which standby a linger timer belongs to

    # -- the watcher's side: the queue ------------------------------------------------------

    def push(self, run_id: str) -> str | None:
        route = standby_route(self.alive, True)  # no cleaner here: the FIFO is always there
        if route == STANDBY:
            self.links.add(run_id)
            self.jobs.add(run_id)
            self.tsp.jobs[run_id] = self._job
            self.used = self.env.now
        else:
            self.tsp.jobs[run_id] = self._cold_job
            if route == COLD:
                self.start()  # for the next run
        refused = self.tsp.push(run_id)
        if refused:
            self.tsp.jobs.pop(run_id, None)
        return refused

    def live_run_ids(self) -> frozenset[str] | None:
        live = self.tsp.live_run_ids()
        if live is None:
            return None
        sweep = sweep_links(dict.fromkeys(self.links, True), live, self.alive)
        self.links.difference_update(sweep.unlink)
        if sweep.start:
            self.start()  # a job of ours may wait for it
        return live

    def start(self) -> None:
        if self.alive:
            return
        self.alive, self._leaving = True, False
        self.served.clear()
        self.used = self.env.now
        self._generation += 1
        self._process = self.env.process(self._serve())
        self._wake_in(self.linger, self._generation)

    def _wake_in(self, seconds: float, generation: int) -> None:
        self.env.timeout(seconds).callbacks.append(lambda _e: self._linger_over(generation))

    def _linger_over(self, generation: int) -> None:
        if generation != self._generation or not self.alive:
            return
        busy = lambda: self.tsp.live_run_ids() != frozenset()  # None: cannot tell, keep it
        left = standby_linger_left(self.env.now, self.used, self.linger, busy)
        if left is not None:
            self._wake_in(left, generation)
            return
        self.node.trace("standby let go: no run went through it for the linger")
        self._leaving = True
        if self._driver is None:  # idle: it leaves at once (else after its run)
            self._process.interrupt("let go")  # else it would serve a job a new one waits for
            self._end()

    # -- the jobs task-spooler runs -----------------------------------------------------------

    def _cold_job(self, run_id: str):
        yield self.env.timeout(COLD_START)
        yield from self.node.triggered_run(run_id)

    def _job(self, run_id: str):
        """The job's cat: waits in its open until a standby opens the FIFO, ends when it closes."""
        closed = self.env.event()
        self.waiting.append((run_id, closed))
        if not self._arrived.triggered:
            self._arrived.succeed()
        try:
            yield closed
        except Interrupt:  # `tsp -k`: the job's cat goes
            self._job_gone(run_id, closed)
        finally:
            self.jobs.discard(run_id)

    def _job_gone(self, run_id: str, closed) -> None:
        """Still in its open, the standby never sees it. Served, its run is told by the
        FIFO (no reader: JobOutput) and stops its command, started or not: its fires go
        back (JOB_GONE). The standby closes the FIFO after the run, as ever."""
        if (run_id, closed) in self.waiting:
            self.waiting.remove((run_id, closed))
        elif self._closing is closed:
            self._gone = True
            if self._driver is not None:
                self._driver.stop_command(JOB_GONE, before_start=True)

    # -- the standby process ------------------------------------------------------------------

    def _serve(self):
        try:
            yield self.env.timeout(COLD_START)  # it starts as any `trigger run` does
            while not self._leaving:
                if not self.waiting:
                    self._arrived = self.env.event()
                    yield self._arrived
                link_run_id, closed = self.waiting.popleft()
                self._closing, self._gone = closed, False
                self.links.discard(link_run_id)  # its job holds it open: the standby takes it away
                run_id = standby_run_id(link_run_id, self.served, self._running)
                if run_id is not None:
                    self.served.append(run_id)
                    yield self.env.timeout(STANDBY_START)
                    driver = self._driver = SimDriver(self.env, self.node.store, self.node._tell_run,
                                                      execute=self.node._command)
                    if self._gone:  # its job was killed already (tsp -k): the run is told at once
                        driver.stop_command(JOB_GONE, before_start=True)
                    yield from driver.run(triggered_run(self.node.layout, self.node.host, run_id,
                                                        int(self.node.settings.run_history),
                                                        f"{run_id}.{self.node.host}"))
                    self._driver = None
                self._closing = None
                closed.succeed()  # the FIFO closes: the job's cat reads to the end and leaves
            self._end()
        except Interrupt:
            pass  # killed: `kill` did the rest

    def _running(self) -> list[str]:
        """`tsp -l`'s running jobs of this FIFO (one slot here: at most one)."""
        running = self.tsp.running
        return [running] if running is not None and running in self.jobs else []

    def _end(self) -> None:
        self.alive = False
        self._generation += 1

    def kill(self) -> None:
        """kill -9 of the standby: its FIFO closes (a job in its run ends, exit 75); its command
        lives on until the watchdog, which saw the standby go, stops it `stop_grace` later."""
        if not self.alive:
            return
        self._end()
        if self._process is not None and self._process.is_alive:
            self._process.interrupt("killed")
        driver, self._driver = self._driver, None
        if driver is not None:
            command = driver.command[0]
            driver.command[0] = None  # not the driver's to kill: the watchdog's
            driver.kill(exit_status=137)
            if command is not None and command.is_alive:
                self.node.trace("standby killed in a run; its command is the watchdog's")
                self.env.timeout(RUN.stop_grace).callbacks.append(
                    lambda _e: command.interrupt("stopped by the watchdog") if command.is_alive else None)
        closed, self._closing = self._closing, None
        if closed is not None:  # the FIFO's write end went with the standby: the job's cat ends
            closed.succeed()

    def jobs_die(self) -> None:
        """A reboot: the jobs' cats die too; task-spooler's queue goes with its server."""
        self.waiting.clear()
        self.links.clear()
        self.jobs.clear()
