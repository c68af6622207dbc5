"""The interface every lab backend gives, and what they share.

A lab is three nodes named node1..node3. Each runs an etcd member (one
three-member cluster with static peers), a task-spooler server and the
trigger watcher, converged by the project's Puppet module through
lab/puppet/node.pp. A triggered run is `puppet apply` of the node's
/var/lib/trigger-lab/manifests, whose first manifest appends one line per
run to /var/lib/trigger-lab/runs.log:

    <start time, epoch seconds> <TRIGGER_RUN_ID> <TRIGGER_HOP> <TRIGGER_CHAIN>

Tests reach nodes with testinfra over SSH (`ssh_config`), and use
`run(node, argv)` and the fault helpers (`service`, `link`) for what they
do to the lab rather than check on it.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NODES = ("node1", "node2", "node3")
NODE_DIR = "/var/lib/trigger-lab"          # the lab's files on a node
RUNS_LOG = f"{NODE_DIR}/runs.log"           # one line per triggered run
MANIFESTS = f"{NODE_DIR}/manifests"         # what a triggered run applies
TS_SOCKET = "/run/trigger-tsp.socket"       # the watcher's task-spooler queue
SERVICES = ("etcd", "trigger-watch")        # what `service()` controls on every backend
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message says what to do about it."""


class Lab(ABC):
    backend: str = ""
    nodes: tuple[str, ...] = NODES
    time_scale: float = 1.0  # how much slower than namespaced nodes (the tests wait that much longer)

    @property
    def etcd_members(self) -> tuple[str, ...]:
        """The nodes that run an etcd member; the others are its clients."""
        return self.nodes

    # -- lifecycle -----------------------------------------------------------

    @abstractmethod
    def create(self) -> None:
        """Make the nodes and make them reachable over SSH."""

    @abstractmethod
    def converge(self) -> None:
        """Apply lab/puppet/node.pp on every node and start what it describes."""

    @abstractmethod
    def destroy(self) -> None:
        """Remove everything the lab made; safe to call on a half-made or absent lab."""

    @abstractmethod
    def status(self) -> dict[str, dict]:
        """Per node: whether it is up, and the state of its services."""

    def exists(self) -> bool:
        """Whether anything of this lab is there (a crashed lab counts)."""
        return any(s.get("exists") for s in self.status().values())

    def verify(self, pytest_args: list[str] = ()) -> int:
        """Run the lab test suite against this lab, leaving the lab up."""
        argv = [sys.executable, "-m", "pytest", str(REPO / "tests/integration/lab"),
                f"--lab={self.backend}", "--lab-reuse", *self.pytest_options(), *pytest_args]
        return subprocess.call(argv, cwd=REPO)

    def pytest_options(self) -> list[str]:
        return []

    # -- nodes ---------------------------------------------------------------

    @abstractmethod
    def address(self, node: str) -> str:
        """The node's address on the lab network (its etcd peers use it)."""

    def endpoints(self, node: str) -> list[str]:
        """etcd client URLs as the node uses them: its own member first."""
        members = self.etcd_members
        order = ([node] if node in members else []) + [n for n in members if n != node]
        return [f"http://{self.address(n)}:2379" for n in order]

    @property
    @abstractmethod
    def ssh_config(self) -> Path:
        """An ssh_config(5) file with a Host entry per node name."""

    sudo: bool = False  # commands over SSH need `sudo` (the Vagrant user is not root)

    def node_env(self, node: str) -> dict[str, str]:
        """The environment `run` gives commands on a node."""
        return {
            "PATH": NODE_PATH,
            "LANG": "C.UTF-8",
            "HOME": "/root",
            "TS_SOCKET": TS_SOCKET,
            "ETCDCTL_ENDPOINTS": ",".join(self.endpoints(node)),
            "ETCDCTL_API": "3",
        }

    @abstractmethod
    def run(self, node: str, argv: list[str], input: str | None = None,
            timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        """Run argv as root on the node (text output, never through a local shell)."""

    def ssh_argv(self, node: str, argv: list[str] = ()) -> list[str]:
        """The ssh command line that logs into the node (or runs argv there)."""
        self.check_node(node)
        command = []
        if argv:
            command = [shlex.join(["sudo", "-n", *argv] if self.sudo else list(argv))]
        elif self.sudo:
            command = ["-t", "sudo", "-i"]
        return ["ssh", "-F", str(self.ssh_config), node, *command]

    def put(self, node: str, path: str, text: str) -> None:
        """Write a file on the node."""
        self.run(node, ["sh", "-c", 'cat > "$1"', "sh", path], input=text, check=True)

    def remove(self, node: str, path: str) -> None:
        """Remove a file `put` wrote on the node (no error when it is not there)."""
        self.run(node, ["rm", "-f", path], check=True)

    @abstractmethod
    def service(self, node: str, name: str, action: str) -> None:
        """start, stop or restart `name` (one of SERVICES) on the node, and wait for it."""

    @abstractmethod
    def link(self, node: str, up: bool) -> None:
        """Connect (up) or cut off (down) the node from the lab network.

        The node keeps running and stays reachable for the tests (as a VM
        keeps its console); only its traffic to the other nodes stops.
        """

    # -- helpers -------------------------------------------------------------

    def check_node(self, node: str) -> str:
        if node not in self.nodes:
            raise LabError(f"no node {node!r} in this lab: nodes are {', '.join(self.nodes)}")
        return node

    def wait_etcd_healthy(self, timeout: float = 60.0) -> None:
        """Until every member answers and the cluster has a leader."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            done = self.run(self.nodes[0], ["etcdctl", "--command-timeout=2s", "endpoint", "health",
                                            "--cluster"], timeout=10)
            last = (done.stdout + done.stderr).strip()
            if done.returncode == 0 and last.count("is healthy") == len(self.etcd_members):
                return
            time.sleep(0.5)
        raise LabError(f"etcd cluster not healthy after {timeout:.0f}s: {last[-500:]}")


def format_status(status: dict[str, dict]) -> str:
    """The `python -m lab status` table."""
    lines = []
    for node, info in status.items():
        state = info.get("state", "?")
        services = info.get("services", {})
        text = ", ".join(f"{name} {s}" for name, s in services.items()) or "-"
        lines.append(f"{node:8} {state:10} {info.get('address', ''):16} {text}")
    return "\n".join(lines)

