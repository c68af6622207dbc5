"""How a fire reaches its hosts, chosen by name: `etcd`, `dummy` or `exec`.

`exec` is the seed's planned "mcollective provider", and covers choria,
bolt or ssh too: a configured command run once per host as an argv, with
`{host}` replaced in each argument, never through a shell.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass

from .fire import Lineage, make_entry
from .records import BadRecord, check_host

PROVIDERS = ("etcd", "dummy", "exec")


@dataclass(frozen=True)
class ExecResult:
    host: str
    exit_code: int


def exec_argv(template: str, host: str) -> list[str]:
    """The argv for one host: the template split once, `{host}` filled in."""
    argv = shlex.split(template)
    if not argv:
        raise BadRecord("--exec-cmd is empty")
    if not any("{host}" in arg for arg in argv):
        raise BadRecord("--exec-cmd must name the host as {host}")
    return [arg.replace("{host}", check_host(host)) for arg in argv]


def exec_fire(template: str, name: str, hosts: list[str], lineage: Lineage, origin: str,
              ttl: int, timeout: float | None = None) -> list[ExecResult]:
    """Run the command for every host, in order; the hop count goes in its environment."""
    entry = make_entry(name, lineage, origin, ttl)  # refuses loops like the etcd provider
    env = {**os.environ, **Lineage(entry.hop, entry.chain).to_env(), "TRIGGER_EVENT_ID": entry.id}
    results = []
    for host in hosts:
        argv = exec_argv(template, host)
        try:
            code = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, timeout=timeout).returncode
        except OSError as exc:
            raise BadRecord(f"cannot run {argv[0]!r}: {exc.strerror}") from None
        except subprocess.TimeoutExpired:
            code = 124
        results.append(ExecResult(host, code))
    return results
