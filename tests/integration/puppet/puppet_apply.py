"""`puppet apply` of the module puppet/trigger in a private Puppet home, and
reading back what it wrote to etcd. Shared by the Puppet module tests."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI, need

REPO = Path(__file__).resolve().parents[3]
MODULEPATH = REPO / "puppet"
MODULE = MODULEPATH / "trigger"
EXAMPLES = MODULE / "examples"
PREFIX = "/puppet_trigger/events"
LB_HOSTS = ["lb01.example.com", "lb02.example.com"]

# Puppet prints these on some containers (Facter cannot read /proc/1/environ);
# they are not ours and say nothing about the module.
FACTER_NOISE = re.compile(r"^.*Facter: .*$\n?", re.MULTILINE)
# What a Ruby backtrace looks like in Puppet's output.
BACKTRACE = re.compile(r"\.rb:\d+:in |/lib/ruby/|^\s+from /", re.MULTILINE)


def trigger_bin() -> str:
    path = os.environ.get("TRIGGER_BIN") or str(REPO / ".venv" / "bin" / "trigger")
    if not os.access(path, os.X_OK):
        message = f"{path} not found: run scripts/setup.sh (or set TRIGGER_BIN)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without trigger or etcd settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TRIGGER_", "ETCDCTL_", "FACTER_"))}
    env.update(extra)
    return env


class Apply:
    """`puppet apply` in a private Puppet home under `root`."""

    def __init__(self, root: Path, hiera: dict | None = None, debug: bool = False, noop: bool = False):
        need("puppet", "puppet")
        self.root = root
        self.debug = debug  # --debug: the log shows each exec's argv
        self.noop = noop  # --noop: what would change, nothing done
        for d in ("var", "conf", "code", "log", "run"):
            (root / d).mkdir(parents=True, exist_ok=True)
        data = {"trigger::globals::trigger_bin": trigger_bin(), **(hiera or {})}
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / "common.json").write_text(json.dumps(data))
        (root / "hiera.yaml").write_text(
            "---\nversion: 5\ndefaults:\n  datadir: data\n  data_hash: json_data\n"
            "hierarchy:\n  - name: common\n    path: common.json\n"
        )

    def __call__(self, manifest: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        path = self.root / f"manifest-{time.monotonic_ns()}.pp"
        path.write_text(manifest)
        r = self.root
        proc = subprocess.run(
            ["puppet", "apply", "--color=false", "--detailed-exitcodes",
             *(["--debug"] if self.debug else []), *(["--noop"] if self.noop else []),
             "--modulepath", str(MODULEPATH),
             "--vardir", str(r / "var"), "--confdir", str(r / "conf"),
             "--codedir", str(r / "code"), "--logdir", str(r / "log"),
             "--rundir", str(r / "run"), "--hiera_config", str(r / "hiera.yaml"),
             str(path)],
            env=env or clean_env(), check=False, capture_output=True, text=True, timeout=120,
        )
        proc.output = FACTER_NOISE.sub("", proc.stdout + proc.stderr)
        return proc


def etcd_dump(endpoint: str, prefix: str = "/") -> tuple[int, dict[str, bytes]]:
    """The store revision and every key under `prefix` with its value."""
    need("etcdctl", "etcd-client")
    out = subprocess.run(
        ["etcdctl", "--endpoints", endpoint, "get", "--prefix", prefix, "-w", "json"],
        env={**clean_env(), "ETCDCTL_API": "3"}, capture_output=True, text=True, check=True,
        timeout=30,
    ).stdout
    data = json.loads(out)
    kvs = {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"])
           for kv in data.get("kvs", [])}
    return data["header"]["revision"], kvs


def inbox_entries(kvs: dict[str, bytes]) -> dict[str, list[dict]]:
    """host -> the inbox entries (decoded) among `kvs`."""
    inboxes: dict[str, list[dict]] = {}
    for key, value in kvs.items():
        rest = key[len(f"{PREFIX}/hosts/"):].split("/") if key.startswith(f"{PREFIX}/hosts/") else []
        if len(rest) == 2:  # <host>/<event-id>, not runs/...
            inboxes.setdefault(rest[0], []).append(json.loads(value))
    return inboxes


def exec_notifying(trigger_title: str, marker: Path) -> str:
    """A resource that changes (and notifies) only while `marker` is missing."""
    return (f"exec {{ '/usr/bin/touch {marker}':\n  creates => '{marker}',\n"
            f"  notify  => Trigger['{trigger_title}'],\n}}\n")
