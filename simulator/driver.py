"""The simulated-time driver: carries out a procedure's effects on SimPy time.

The same procedures as the real daemon and `trigger run`
(`trigger.procedures`), with the node's connection to the simulated etcd,
its fake task-spooler and its fake Puppet runs. Like `trigger.driver`, it
holds no rule: it only says how each effect is done here.

It steps the procedure from SimPy callbacks rather than as a SimPy
process: a wait arms one timer (or one watch delivery) that resumes it.
Ten thousand nodes each waiting on a watch cost one scheduled event per
wait this way, not three. `kill()` ends the procedure at once where it
waits, as a killed process would: no cleanup reaches the store, leases end
by themselves.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from trigger.coordination import read_config_dir
from trigger.effects import ELAPSED, NOW, Call, Cancel, CommandStopped, Elapsed, Enqueue, Execute, LiveRuns, \
    NextChange, Note, Now, ProcessAlive, ReadConfig, Sleep, Spawn, StopCommand, Unwatch, Watch
from trigger.queue import QueueError
from trigger.store.base import CompactedError, StoreError, UnavailableError

from .network import NO_ANSWER


class SimDriver:
    """Runs one procedure for one node, from `start` until it returns or is killed."""

    __slots__ = ("env", "store", "tsp", "execute", "tell", "stats", "killed", "done", "command",
                 "process_alive", "children", "on_failure", "stopped_because",
                 "_procedure", "_watch", "_buffer", "_waiting", "_deadline", "_timer_at")

    def __init__(self, env, store, tell: Callable[[Note], None], tsp=None,
                 execute: Callable | None = None, stats=None,
                 process_alive: Callable[[str], bool | None] = lambda process: None):
        self.env, self.store, self.tsp, self.execute = env, store, tsp, execute
        self.process_alive = process_alive
        self.children: list[SimDriver] = []
        self.on_failure: Callable[[Exception], None] | None = None  # None: the error propagates
        self.tell, self.stats = tell, stats
        self.killed = False
        self.stopped_because: str | None = None  # the command was stopped from outside the run
        self.command: list = [None]  # the running command's SimPy process, shared with spawned ones
        self.done = env.event()  # succeeds with the procedure's value
        self._procedure = None
        self._watch = None
        self._buffer: deque = deque()
        self._waiting = False  # for a watch delivery, until `_deadline`
        self._deadline = 0.0
        self._timer_at: float | None = None

    @property
    def watching(self) -> bool:
        return self._watch is not None

    def start(self, procedure) -> "SimDriver":
        """Step `procedure` now, up to its first wait."""
        self._procedure = procedure
        self._step(None, None)
        return self

    def run(self, procedure):
        """A SimPy generator for `yield from`: the procedure's value once it ends."""
        self.start(procedure)
        return (yield self.done)

    def kill(self, exit_status: int | None = None, command: bool = True) -> None:
        """End at once, spawned procedures and command too (a process killed);
        with `command=False` the command is left running (its own process group)."""
        if self.killed:
            return
        self.killed = True
        self._waiting = False
        self._unwatch()
        if not command:
            self.command[0] = None  # no longer ours: the spawned ones must not stop it either
        for child in self.children:
            child.kill()
        process = self.command[0]
        if process is not None and process.is_alive:
            process.interrupt("killed")
        if self._procedure is not None:
            self._procedure.close()
        if not self.done.triggered:
            self.done.succeed(exit_status)

    def stop_command(self, reason: str, before_start: bool = False) -> bool:
        """Stop the running command from outside the run (SIGTERM to `trigger run`):
        its Execute returns CommandStopped with `reason`. False if none runs, unless
        `before_start`: then a command not started yet is stopped as it would start
        (trigger.driver.Command remembers a stop asked before its start)."""
        process = self.command[0]
        if self.killed:
            return False
        if process is None or not process.is_alive:
            if before_start and process is None and self.stopped_because is None:
                self.stopped_because = reason
                return True
            return False
        self.stopped_because = reason
        process.interrupt("stopped")  # the fake Puppet run ends at once, as with StopCommand
        return True

    # -- stepping ------------------------------------------------------------------------

    def _step(self, value, error) -> None:
        procedure, instant = self._procedure, self._instant
        while not self.killed:
            try:
                effect = procedure.send(value) if error is None else procedure.throw(error)
            except StopIteration as end:
                self._unwatch()
                self.done.succeed(end.value)
                return
            except Exception as exc:
                if self.on_failure is None:
                    raise
                self.kill()
                self.on_failure(exc)
                return
            value, error = None, None
            if effect is ELAPSED:  # the most frequent effects, asked after every wait
                value = self.env.now  # simulated time is monotonic
                continue
            if effect is NOW:  # the host's wall clock, which a clock_step moves
                value = self.env.now + self.store.wall_offset
                continue
            kind = type(effect)
            if kind is NextChange and not self._buffer:
                self._wait_for_delivery(effect.timeout)
                return
            if kind is Call and (self.store.delay is not None or self.store.silent_until > self.env.now):
                delay = self.store.call_delay()
                within = effect.within
                if within is None and delay > NO_ANSWER:  # the client's own timeouts, endpoint after endpoint
                    within = NO_ANSWER
                if within is not None and delay > within:  # given up on before its answer
                    error = UnavailableError(f"no answer within {within:.1f}s")
                    self.env.timeout(within).callbacks.append(lambda _e, e=error: self._resume(None, e))
                    return
                if delay > 0:  # the latency fault: the call travels, then is done
                    self.env.timeout(delay).callbacks.append(lambda _e, call=effect: self._delayed(call))
                    return
            handler = instant.get(kind)
            if handler is None:
                self._waits[kind](self, effect)  # arranges a `_resume` later
                return
            try:
                value = handler(self, effect)
            except (StoreError, QueueError) as exc:
                error = exc

    def _resume(self, value=None, error=None) -> None:
        if not self.killed:
            self._step(value, error)

    def _delayed(self, call: Call) -> None:
        if self.killed:
            return
        try:
            value = self._call(call)
        except (StoreError, QueueError) as exc:
            self._step(None, exc)
            return
        self._step(value, None)

    # -- effects done at once ------------------------------------------------------------

    def _call(self, effect: Call):
        return effect.fn(self.store, *effect.args)

    def _now(self, _effect: Now) -> float:
        return self.env.now + self.store.wall_offset

    def _elapsed(self, _effect: Elapsed) -> float:
        return self.env.now

    def _start_watch(self, effect: Watch) -> None:
        self._unwatch()
        self._buffer = buffer = deque()

        def deliver(payload) -> None:
            if buffer is not self._buffer or self.killed:
                return  # a watch this procedure gave up
            if isinstance(payload, StoreError) and self.stats is not None:
                kind = "compacted" if isinstance(payload, CompactedError) else "unavailable"
                self.stats.watch_errors[kind] += 1
            buffer.append(payload)
            if self._waiting:
                self._waiting = False
                self._resume_with(buffer.popleft())

        self._watch = self.store.watch_prefix(effect.prefix, effect.revision, deliver)

    def _unwatch(self, _effect: Unwatch | None = None) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _next_change(self, _effect: NextChange):
        return self._take(self._buffer.popleft())

    def _take(self, item):
        """A delivery, or its error raised (a watch reports its error once, then is dead)."""
        if isinstance(item, StoreError):
            self._watch = None
            raise item
        return item

    def _resume_with(self, item) -> None:
        try:
            value = self._take(item)
        except StoreError as exc:
            self._resume(None, exc)
            return
        self._resume(value)

    def _live_runs(self, _effect: LiveRuns):
        if self.stats is not None:
            self.stats.resyncs += 1  # every re-read asks the queue first
        live = self.tsp.live_run_ids()
        if live is None:
            raise QueueError("task-spooler server is not running")
        return live

    def _enqueue(self, effect: Enqueue) -> None:
        refused = self.tsp.push(effect.run_id)
        if refused:
            raise QueueError(refused)

    def _read_config(self, effect: ReadConfig):
        return read_config_dir(effect.path)

    def _is_alive(self, effect: ProcessAlive) -> bool | None:
        return self.process_alive(effect.process)

    def _spawn(self, effect: Spawn) -> "SimDriver":
        child = SimDriver(self.env, self.store, self.tell, process_alive=self.process_alive)
        child.command = self.command  # a procedure beside a run may stop its command
        child.on_failure = self._child_failed
        self.children.append(child)
        return child.start(effect.procedure)

    def _child_failed(self, exc: Exception) -> None:
        """A spawned procedure failed (HostTaken): this one ends too."""
        self.kill()
        if self.on_failure is None:
            raise exc
        self.on_failure(exc)

    def _stop_command(self, _effect: StopCommand) -> None:
        process = self.command[0]
        if process is not None and process.is_alive:
            process.interrupt("stopped")  # the fake Puppet run ends at once, as SIGKILL would

    def _cancel(self, effect: Cancel) -> None:
        effect.handle.kill()
        # Forgotten once stopped: the child's failure handler points back at
        # this driver, a cycle only the garbage collector would free.
        if effect.handle in self.children:
            self.children.remove(effect.handle)

    def _note(self, effect: Note) -> None:
        self.tell(effect)

    # -- effects that take simulated time --------------------------------------------------

    def _sleep(self, effect: Sleep) -> None:
        self.env.timeout(effect.seconds).callbacks.append(lambda _e: self._resume())

    def _execute(self, effect: Execute) -> None:
        if self.stopped_because is not None:  # stopped before it started: it never runs
            stopped = CommandStopped(None, self.stopped_because)
            self.env.timeout(0).callbacks.append(lambda _e: self._resume(stopped))
            return
        process = self.command[0] = self.env.process(self.execute(effect.record))

        def ended(event) -> None:
            self.command[0] = None
            if not event.ok:  # the command raised (Ctrl-C in it): SimPy raises it from its step
                return
            if self.stopped_because is not None:
                self._resume(CommandStopped(event.value, self.stopped_because))
                return
            self._resume(event.value)

        process.callbacks.append(ended)

    def _wait_for_delivery(self, timeout: float) -> None:
        self._waiting = True
        self._deadline = deadline = self.env.now + timeout
        # One timer at a time: a later deadline re-arms the pending timer when
        # it expires instead of scheduling another.
        if self._timer_at is None or self._timer_at > deadline:
            self._set_timer(deadline)

    def _set_timer(self, at: float) -> None:
        self._timer_at = at

        def expire(_event) -> None:
            if self._timer_at != at:
                return  # a sooner timer replaced this one
            self._timer_at = None
            if not self._waiting or self.killed:
                return
            if self.env.now < self._deadline:
                self._set_timer(self._deadline)  # the wait was renewed meanwhile
            else:
                self._waiting = False
                self._resume(None)

        self.env.timeout(at - self.env.now).callbacks.append(expire)

    _instant = {
        Call: _call, Now: _now, Elapsed: _elapsed, Watch: _start_watch, Unwatch: _unwatch,
        NextChange: _next_change, LiveRuns: _live_runs, Enqueue: _enqueue, ReadConfig: _read_config, Spawn: _spawn,
        Cancel: _cancel, Note: _note, StopCommand: _stop_command, ProcessAlive: _is_alive,
    }
    _waits = {Sleep: _sleep, Execute: _execute}
