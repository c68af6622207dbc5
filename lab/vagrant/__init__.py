"""The Vagrant lab: three VMs of the repository's Vagrantfile on libvirt.

python-vagrant drives Vagrant with vagrant-libvirt. `create` builds (or
finds cached) the box (lab/box.py), starts libvirt where nothing runs it
(lab/vagrant/libvirt.py), tries whether KVM boots the box's kernel (else
qemu's emulation), builds the wheels of the checkout and its dependencies
on the host, and runs `vagrant up --no-provision` (rsync carries the
checkout and the wheels). `converge` runs the Vagrantfile's provisioner on
the three VMs at once: `trigger` from the wheels, then `puppet apply` of
lab/puppet/node.pp, whose module has systemd run etcd and the watcher.
`destroy` removes the VMs, whatever domain, volume or network of the lab
libvirt still has, stops the daemons the lab started and puts /dev/kvm's
mode back. Each step says how long it took.

Tests reach the nodes with plain ssh and the `vagrant ssh-config` output
(one connection per node, kept open), never `vagrant ssh -c` (3 s a call).
The Vagrant user is not root, so commands run with sudo.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from .. import box as lab_box
from ..base import REPO, SERVICES, Lab, LabError
from . import libvirt

ADDRESSES = {"node1": "192.168.56.11", "node2": "192.168.56.12", "node3": "192.168.56.13"}
DEFAULT_DIR = Path("/var/tmp/trigger-lab/vagrant")
WHEELS = lab_box.CACHE / "wheels"
VM_HOST_MEMORY_GIB = 2  # what one emulated 1 GiB VM takes on the host (measured: 1.7-2 GB)

# Host programs the Vagrant lab runs, and their Debian packages (scripts/setup.sh --vagrant).
PROGRAMS = {
    "vagrant": "vagrant", "libvirtd": "libvirt-daemon-system", "virtlogd": "libvirt-daemon-system",
    "virsh": "libvirt-clients", "qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils",
    "debootstrap": "debootstrap", "dnsmasq": "dnsmasq-base", "rsync": "rsync", "iptables": "iptables",
}
PLUGIN = "/usr/share/rubygems-integration/all/gems/vagrant-libvirt-*"


def unavailable() -> str | None:
    """Why the Vagrant lab cannot run here (one line naming what), or None when it can."""
    missing = sorted({package for program, package in PROGRAMS.items() if shutil.which(program) is None})
    if not _glob(PLUGIN) and "vagrant-libvirt" not in _vagrant_plugins():
        missing.append("vagrant-libvirt")
    if missing:
        return f"missing Debian packages: {', '.join(missing)} (scripts/setup.sh --vagrant)"
    if importlib.util.find_spec("vagrant") is None:
        return "python-vagrant not installed: pip install -e '.[test]'"
    if os.geteuid() != 0:
        return "the Vagrant lab runs libvirt's system instance: run it as root"
    return None


def _glob(pattern: str) -> list[str]:
    import glob

    return glob.glob(pattern)


def _vagrant_plugins() -> str:
    if shutil.which("vagrant") is None:
        return ""
    return subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True).stdout


def memory_shortfall(nodes: int) -> str | None:
    """Why this host has too little free memory for the VMs, or None."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    available_gib = int(fields["MemAvailable"].split()[0]) / (1 << 20)
    needed = nodes * VM_HOST_MEMORY_GIB
    if available_gib < needed:
        return f"{available_gib:.1f} GiB of memory available, {nodes} VMs need about {needed} GiB"
    return None


class VagrantLab(Lab):
    backend = "vagrant"
    sudo = True

    def __init__(self, root: str | Path = REPO, state_dir: str | Path | None = None, log=print):
        self.root = Path(root)
        self.state_dir = Path(state_dir or os.environ.get("TRIGGER_LAB_VAGRANT_DIR") or DEFAULT_DIR)
        self.host = libvirt.Host(self.state_dir)
        self.phases = lab_box.Phases()
        self.log = log

    @property
    def driver_file(self) -> Path:
        return self.state_dir / "driver"

    @property
    def time_scale(self) -> float:
        """How much longer than on namespaced nodes things take here (emulated CPUs)."""
        return 8.0 if self._driver() == "qemu" else 1.5

    def _driver(self) -> str:
        return self.driver_file.read_text().strip() if self.driver_file.exists() else "qemu"

    def _env(self) -> dict[str, str]:
        return {
            **lab_box.vagrant_env(),
            "VAGRANT_DEFAULT_PROVIDER": "libvirt",
            "VAGRANT_DOTFILE_PATH": str(self.state_dir / "dotfile"),
            "TRIGGER_LAB_BOX": lab_box.recipe().name,
            "TRIGGER_LAB_LIBVIRT_DRIVER": self._driver(),
            "TRIGGER_LAB_WHEELS": str(WHEELS),
            "TRIGGER_LAB_CONSOLE_DIR": str(self.console_dir),
        }

    @property
    def console_dir(self) -> Path:
        return self.state_dir / "console"

    def _vagrant(self, log: Path | None = None):
        import vagrant

        if log is None:
            return vagrant.Vagrant(root=str(self.root), env=self._env(), quiet_stdout=False, quiet_stderr=False)
        cm = vagrant.make_file_cm(str(log))
        return vagrant.Vagrant(root=str(self.root), env=self._env(), out_cm=cm, err_cm=cm)

    def _phase(self, name: str, step, *args):
        result = self.phases.run(name, step, *args)
        self.log(f"lab: {name}: {self.phases.times[name]:.0f} s")
        return result

    # -- lifecycle ---------------------------------------------------------------

    def create(self) -> None:
        reason = unavailable() or memory_shortfall(len(self.nodes))
        if reason:
            raise LabError(reason)
        box, _ = self._phase("box", lab_box.build, self.log)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.console_dir.mkdir(exist_ok=True)
        self.console_dir.chmod(0o1777)  # libvirt's qemu user writes the consoles
        self._phase("libvirtd", self.host.start)
        kvm = self._phase("kvm probe", libvirt.kvm_boots, box.kernel, box.initrd, box.dir / "kvm.json")
        self.driver_file.write_text("kvm\n" if kvm else "qemu\n")
        self.log(f"lab: {'KVM boots the box' if kvm else 'KVM does not boot the box: qemu emulation'}")
        self._phase("wheels", self._build_wheels)
        self._phase("vagrant up", self._up)
        self._write_ssh_config()

    def _build_wheels(self) -> None:
        python = sys.executable if sys.version_info[:2] == (3, 11) else shutil.which("python3.11")
        if python is None:
            raise LabError("python3.11 not found (the VMs' Python): install the Debian package python3.11")
        WHEELS.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([python, "-m", "pip", "wheel", "-q", "-w", str(WHEELS), str(self.root)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise LabError(f"pip wheel of the checkout failed: {done.stderr.strip().splitlines()[-1:]}")

    def _up(self) -> None:
        log = self.state_dir / "vagrant-up.log"
        try:
            self._vagrant(log).up(no_provision=True, provider="libvirt")
        except subprocess.CalledProcessError:
            raise LabError(f"vagrant up failed: {self._why_not_up(log)}") from None

    def _why_not_up(self, log: Path) -> str:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        for node in self.nodes:
            console = self.console_dir / f"{node}.log"
            if console.exists() and "login:" not in console.read_text(errors="replace"):
                return (f"the box did not boot on {node} (console: {console}); "
                        f"vagrant: {lines[-1].strip() if lines else '?'}")
        return f"{lines[-1].strip() if lines else '?'} (log: {log})"

    def converge(self) -> None:
        if not all(s["state"] == "up" for s in self.status().values()):
            self.create()
        self._phase("converge", self._provision_all)
        self._write_ssh_config()
        self._phase("etcd healthy", self.wait_etcd_healthy, 60 * self.time_scale)
        for node in self.nodes:
            self._wait_active(node, "trigger-watch")
        self.log(f"lab: phases: {self.phases}")

    def _provision_all(self) -> None:
        # Converge applies the checkout as it is now: fresh wheels, copied again.
        self._build_wheels()
        done = subprocess.run(["vagrant", "rsync"], cwd=self.root, env=self._env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise LabError(f"vagrant rsync failed: {done.stderr.strip()[-300:]}")
        failures = {}

        def provision(node: str) -> None:
            log = self.state_dir / f"provision-{node}.log"
            try:
                self._vagrant(log).provision(vm_name=node)
            except subprocess.CalledProcessError:
                # What the provisioner printed last, before Vagrant's own explanation.
                output = log.read_text(errors="replace").split("The SSH command responded")[0]
                tail = [line.strip() for line in output.strip().splitlines()[-3:]]
                failures[node] = " | ".join(tail)

        threads = [threading.Thread(target=provision, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise LabError("converging failed: " + "; ".join(f"{n}: {w}" for n, w in sorted(failures.items())))

    def destroy(self) -> None:
        if not self.exists():
            return
        started = time.monotonic()
        try:
            if not libvirt.responds():
                self.host.start()  # a crashed session's domains and networks are in libvirt's files
            self._close_ssh()
            if (self.state_dir / "dotfile").exists():
                try:
                    self._vagrant(self.state_dir / "vagrant-destroy.log").destroy()
                except subprocess.CalledProcessError:
                    pass  # what it left, the sweep removes
            left = libvirt.sweep() + self.host.remove_new_pools()
            if left:
                self.log(f"lab: removed what vagrant left: {', '.join(left)}")
        finally:
            self.host.stop()
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.log(f"lab: destroy: {time.monotonic() - started:.0f} s")

    def exists(self) -> bool:
        return self.state_dir.exists()

    def status(self) -> dict[str, dict]:
        states = {}
        if self.exists() and libvirt.responds() and (self.state_dir / "dotfile").exists():
            states = {s.name: s.state for s in self._vagrant(self.state_dir / "vagrant-status.log").status()}
        result = {}
        for node in self.nodes:
            state = states.get(node, "not_created")
            services = {}
            if state == "running" and self.ssh_config.exists():
                done = self.run(node, ["systemctl", "is-active", *SERVICES], timeout=30)
                services = dict(zip(SERVICES, done.stdout.split()))
            result[node] = {"exists": state not in ("not_created", "unknown"),
                            "state": "up" if state == "running" else state,
                            "address": self.address(node), "services": services}
        return result

    # -- nodes -------------------------------------------------------------------

    def address(self, node: str) -> str:
        return ADDRESSES[self.check_node(node)]

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    def _write_ssh_config(self) -> None:
        text = self._vagrant(self.state_dir / "vagrant-ssh-config.log").ssh_config()
        # One connection per node, kept open: an SSH handshake costs a second
        # on an emulated CPU.
        self.ssh_config.write_text(
            "# trigger lab (vagrant): from `vagrant ssh-config`\n"
            f"Host *\n  ControlMaster auto\n  ControlPath {self.state_dir}/ssh-%h\n  ControlPersist 60s\n"
            f"  ServerAliveInterval 5\n  ServerAliveCountMax 6\n  ConnectTimeout 60\n\n{text}")

    def _close_ssh(self) -> None:
        if self.ssh_config.exists():
            for node in self.nodes:
                subprocess.run(["ssh", "-F", str(self.ssh_config), "-O", "exit", node],
                               capture_output=True, timeout=10)

    def run(self, node: str, argv: list[str], input: str | None = None, timeout: float = 120,
            check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full_env = {**self.node_env(node), **(env or {})}
        remote = ["sudo", "-n", "env", *(f"{k}={v}" for k, v in full_env.items()), *argv]
        command = ["ssh", "-F", str(self.ssh_config), node, shlex.join(remote)]
        for attempt in (1, 2):
            try:
                done = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                done = subprocess.CompletedProcess(command, -9, "", f"(killed after {timeout}s)")
            # 255 is ssh's own failure; on a loaded host a new control master
            # can be slow to answer once.
            if done.returncode != 255:
                break
        if check and done.returncode != 0:
            raise LabError(f"{node}: {shlex.join(argv)} exited {done.returncode}: {done.stderr.strip()[-1000:]}")
        return done

    def service(self, node: str, name: str, action: str) -> None:
        if name not in SERVICES:
            raise LabError(f"no service {name!r}: services are {', '.join(SERVICES)}")
        if action not in ("start", "stop", "restart"):
            raise LabError(f"service action {action!r}: use start, stop or restart")
        self.run(node, ["systemctl", action, name], check=True, timeout=60 * self.time_scale)
        if action != "stop":
            self._wait_active(node, name)

    def _wait_active(self, node: str, name: str, timeout: float = 60) -> None:
        timeout *= self.time_scale
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run(node, ["systemctl", "is-active", "--quiet", name], timeout=30).returncode == 0:
                return
            time.sleep(1)
        raise LabError(f"{node}: {name} is not active after {timeout:.0f}s")

    def boot_id(self, node: str) -> str:
        return self.run(node, ["cat", "/proc/sys/kernel/random/boot_id"], check=True).stdout.strip()

    def reboot(self, node: str, timeout: float = 120) -> None:
        """Reboot the node and wait until it is back with its services running."""
        before = self.boot_id(node)
        self.run(node, ["systemctl", "reboot"], timeout=30)
        subprocess.run(["ssh", "-F", str(self.ssh_config), "-O", "exit", node], capture_output=True, timeout=10)
        timeout *= self.time_scale
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.run(node, ["cat", "/proc/sys/kernel/random/boot_id"], timeout=30)
            if done.returncode == 0 and done.stdout.strip() not in ("", before):
                for service in SERVICES:
                    self._wait_active(node, service)
                return
            time.sleep(2)
        raise LabError(f"{node} did not come back within {timeout:.0f}s of a reboot")

    def link(self, node: str, up: bool) -> None:
        # The interface holding the lab address; SSH comes in on the
        # management interface, so the node stays reachable. systemd-networkd
        # drops the address of a link that is down: the name is kept to bring
        # it back, and the address is waited for.
        record = self.state_dir / f"link-{self.check_node(node)}"
        if record.exists():
            interface = record.read_text().strip()
        else:
            shown = self.run(node, ["ip", "-o", "-4", "addr", "show", "to", f"{self.address(node)}/32"],
                             check=True).stdout
            match = re.match(r"\d+:\s+(\S+)", shown)
            if not match:
                raise LabError(f"{node}: no interface has {self.address(node)}")
            interface = match.group(1)
            record.write_text(interface)
        self.run(node, ["ip", "link", "set", interface, "up" if up else "down"], check=True)
        if up:
            deadline = time.monotonic() + 30 * self.time_scale
            while f"{self.address(node)}/" not in self.run(node, ["ip", "-o", "-4", "addr", "show", interface]).stdout:
                if time.monotonic() > deadline:
                    raise LabError(f"{node}: {interface} is up but has not got {self.address(node)} back")
                time.sleep(1)
            record.unlink()
