"""The Vagrant lab: the three Debian 12 VMs of the repository's Vagrantfile.

python-vagrant drives Vagrant: `create` is `vagrant up --no-provision`,
`converge` is `vagrant provision` (packages, the project in a virtualenv,
`puppet apply` of lab/puppet/node.pp, which lets systemd run etcd and the
watcher), `destroy` is `vagrant destroy`. The nodes' ssh-config comes from
`vagrant ssh-config`; the Vagrant user is not root, so commands run with
sudo. Needs Vagrant and a provider (VirtualBox, or libvirt with the
vagrant-libvirt plugin); `unavailable()` says what is missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from ..base import REPO, SERVICES, Lab, LabError

ADDRESSES = {"node1": "192.168.56.11", "node2": "192.168.56.12", "node3": "192.168.56.13"}
DEFAULT_DIR = Path("/var/tmp/trigger-lab/vagrant")


def unavailable() -> str | None:
    """Why the Vagrant lab cannot run here, or None when it can."""
    if shutil.which("vagrant") is None:
        return "vagrant not found: install the Debian package vagrant"
    if importlib.util.find_spec("vagrant") is None:
        return "python-vagrant not installed: pip install -e '.[test]'"
    provider = os.environ.get("VAGRANT_DEFAULT_PROVIDER")
    found = {
        "virtualbox": shutil.which("VBoxManage") is not None,
        "libvirt": _libvirt_usable(),
    }
    if provider:
        return None if found.get(provider, True) else f"VAGRANT_DEFAULT_PROVIDER={provider} is not usable here"
    if any(found.values()):
        return None
    return ("no Vagrant provider: VirtualBox (VBoxManage) is not installed, and libvirt needs "
            "the vagrant-libvirt plugin and a running libvirtd")


def _libvirt_usable() -> bool:
    if not Path("/var/run/libvirt/libvirt-sock").exists():
        return False
    done = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True)
    return "vagrant-libvirt" in done.stdout


class VagrantLab(Lab):
    backend = "vagrant"
    sudo = True

    def __init__(self, root: str | Path = REPO, state_dir: str | Path | None = None):
        self.root = Path(root)
        self.state_dir = Path(state_dir or os.environ.get("TRIGGER_LAB_VAGRANT_DIR") or DEFAULT_DIR)

    def _vagrant(self):
        import vagrant

        return vagrant.Vagrant(root=str(self.root), quiet_stdout=False, quiet_stderr=False)

    # -- lifecycle ---------------------------------------------------------------

    def create(self) -> None:
        reason = unavailable()
        if reason:
            raise LabError(reason)
        self._vagrant().up(no_provision=True)
        self._write_ssh_config()

    def converge(self) -> None:
        if not all(s["state"] == "up" for s in self.status().values()):
            self.create()
        self._vagrant().provision()
        self._write_ssh_config()
        self.wait_etcd_healthy(timeout=120)
        for node in self.nodes:
            self._wait_active(node, "trigger-watch")

    def destroy(self) -> None:
        if shutil.which("vagrant") is not None and self.exists():
            self._vagrant().destroy()
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)

    def status(self) -> dict[str, dict]:
        states = {}
        if unavailable() is None:
            states = {s.name: s.state for s in self._vagrant().status()}
        result = {}
        for node in self.nodes:
            state = states.get(node, "not_created")
            services = {}
            if state == "running" and self.ssh_config.exists():
                done = self.run(node, ["systemctl", "is-active", *SERVICES], timeout=20)
                services = dict(zip(SERVICES, done.stdout.split()))
            result[node] = {"exists": state not in ("not_created", "unknown"),
                            "state": "up" if state == "running" else state,
                            "address": self.address(node), "services": services}
        return result

    def exists(self) -> bool:
        return unavailable() is None and any(s["exists"] for s in self.status().values())

    # -- nodes -------------------------------------------------------------------

    def address(self, node: str) -> str:
        return ADDRESSES[self.check_node(node)]

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    def _write_ssh_config(self) -> None:
        v = self._vagrant()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        text = "".join(v.ssh_config(vm_name=node) for node in self.nodes)
        self.ssh_config.write_text(f"# trigger lab (vagrant): from `vagrant ssh-config`\n{text}")

    def run(self, node: str, argv: list[str], input: str | None = None, timeout: float = 120,
            check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full_env = {**self.node_env(node), **(env or {})}
        remote = ["sudo", "-n", "env", *(f"{k}={v}" for k, v in full_env.items()), *argv]
        command = ["ssh", "-F", str(self.ssh_config), node, shlex.join(remote)]
        try:
            done = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            done = subprocess.CompletedProcess(command, -9, "", f"(killed after {timeout}s)")
        if check and done.returncode != 0:
            raise LabError(f"{node}: {shlex.join(argv)} exited {done.returncode}: {done.stderr.strip()[-1000:]}")
        return done

    def service(self, node: str, name: str, action: str) -> None:
        if name not in SERVICES:
            raise LabError(f"no service {name!r}: services are {', '.join(SERVICES)}")
        if action not in ("start", "stop", "restart"):
            raise LabError(f"service action {action!r}: use start, stop or restart")
        self.run(node, ["systemctl", action, name], check=True, timeout=60)
        if action != "stop":
            self._wait_active(node, name)

    def _wait_active(self, node: str, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run(node, ["systemctl", "is-active", "--quiet", name], timeout=20).returncode == 0:
                return
            time.sleep(1)
        raise LabError(f"{node}: {name} is not active after {timeout}s")

    def link(self, node: str, up: bool) -> None:
        # The interface holding the lab address; SSH comes in on Vagrant's NAT
        # interface, so the node stays reachable.
        shown = self.run(node, ["ip", "-o", "-4", "addr", "show", "to", f"{self.address(node)}/32"],
                         check=True).stdout
        match = re.match(r"\d+:\s+(\S+)", shown)
        if not match:
            raise LabError(f"{node}: no interface has {self.address(node)}")
        self.run(node, ["ip", "link", "set", match.group(1), "up" if up else "down"], check=True)
