"""The watcher daemon: `procedures.serve_host` (or `follow_inbox`) on real time.

The loop itself (re-read policy, check interval, reconnect backoff,
carrying out the core's actions) is in `trigger.procedures`, shared with
the simulator; this only binds it to a store, a queue and the clock.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from .core import Action, WatcherCore
from .driver import RealDriver
from .monitor import WatchMonitor
from .policy import WATCH
from .procedures import HostTaken, Registration, carry_out, follow_inbox, leave, resync, serve_host
from .queue import RunQueue
from .store.base import Store

log = logging.getLogger("trigger.watch")


class WatchDaemon:
    def __init__(
        self,
        store: Store,
        queue: RunQueue,
        core: WatcherCore,
        run_argv: Callable[[str], list[str]],
        clock: Callable[[], float] = time.time,
        check_interval: float = WATCH.check_interval,
        idle_check: float = WATCH.idle_check,
        registration: Registration | None = None,
        monitor: WatchMonitor | None = None,
    ):
        """With `registration`, the daemon first claims the host (standing by
        while another watcher serves it) and keeps its membership."""
        self.core = core
        self.registration = registration
        self.policy = WATCH._replace(check_interval=check_interval, idle_check=idle_check)
        self.monitor = monitor or WatchMonitor(core)  # log lines and metrics
        self.driver = RealDriver(store, queue, run_argv, clock=clock, tell=self.monitor.note)

    def stop(self) -> None:
        self.driver.stop()

    def run_forever(self) -> None:
        """Until `stop()`; raises HostTaken if another watcher took the host over."""
        reg = self.registration
        if reg is None:
            self.driver.run(follow_inbox(self.core, self.policy))
            return
        try:
            self.driver.run(serve_host(reg, self.core, self.policy))
        except HostTaken:
            raise  # the keys are the other watcher's now
        else:
            RealDriver(self.driver.store).run(leave(reg))

    # -- single steps, for tests that drive the daemon by hand -----------------------

    def resync(self) -> int:
        return self.driver.run(resync(self.core, self.core.layout.host_prefix(self.core.host), self.policy))

    def carry_out(self, actions: list[Action]) -> None:
        self.driver.run(carry_out(self.core, actions, self.policy))
