"""The libvirt host under the Vagrant lab: its daemons, /dev/kvm, KVM or emulation.

Where no systemd runs (a container), nothing starts libvirtd: the lab starts
virtlogd and libvirtd itself, niced so the emulated VMs yield the CPU, with
PID files in its state directory, and stops exactly those. Where /dev/kvm is
root-only (no udev), libvirt re-probes qemu on every call (8 s each); the lab
gives it udev's usual `root:kvm 0660` and puts the old mode back.

Whether KVM can boot the box's kernel is tried, not assumed: a nested PVM
/dev/kvm runs only kernels built for PVM, and then the lab uses qemu's
emulation (TCG).
"""

from __future__ import annotations

import grp
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from ..base import LabError

URI = "qemu:///system"
SOCKET = Path("/var/run/libvirt/libvirt-sock")
KVM = Path("/dev/kvm")
PREFIX = "trigger-lab"  # every domain, volume and network of the lab starts with it
DAEMONS = ("virtlogd", "libvirtd")


def virsh(*args: str, check: bool = True) -> str:
    done = subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise LabError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def responds() -> bool:
    if not SOCKET.exists():
        return False
    return subprocess.run(["virsh", "-c", URI, "version"], capture_output=True, timeout=60).returncode == 0


class Host:
    """What the lab started or changed on this host, recorded in `state_dir`."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir

    def pid_file(self, daemon: str) -> Path:
        return self.state_dir / f"{daemon}.pid"

    @property
    def kvm_record(self) -> Path:
        return self.state_dir / "dev-kvm-mode.json"

    def start(self) -> None:
        """libvirtd answering, and /dev/kvm usable by libvirt's qemu user."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._open_kvm()
        if not responds():
            self._start_daemons()
        if not self.pools_record.exists():
            self.pools_record.write_text(json.dumps(virsh("pool-list", "--all", "--name").split()))

    @property
    def pools_record(self) -> Path:
        return self.state_dir / "pools-before.json"

    def remove_new_pools(self) -> list[str]:
        """Storage pools vagrant-libvirt defined for the lab, once they are empty."""
        if not self.pools_record.exists() or not responds():
            return []
        before = set(json.loads(self.pools_record.read_text()))
        removed = []
        for pool in virsh("pool-list", "--all", "--name").split():
            if pool not in before and not virsh("vol-list", pool, "--name", check=False).split():
                virsh("pool-destroy", pool, check=False)
                virsh("pool-undefine", pool, check=False)
                removed.append(f"pool {pool}")
        return removed

    def _start_daemons(self) -> None:
        for daemon in DAEMONS:
            done = subprocess.run(["nice", "-n", "10", daemon, "-d", "-p", str(self.pid_file(daemon))],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise LabError(f"{daemon} did not start: {done.stderr.strip()[-300:]}")
        deadline = time.monotonic() + 60
        while not responds():
            if time.monotonic() > deadline:
                raise LabError("libvirtd started but does not answer on " + str(SOCKET))
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the daemons this lab started and put /dev/kvm's mode back."""
        for daemon in reversed(DAEMONS):
            pid_file = self.pid_file(daemon)
            if not pid_file.exists():
                continue
            try:
                pid = int(pid_file.read_text().split()[0])
                if _is(pid, daemon):
                    os.kill(pid, signal.SIGTERM)
                    _wait_gone(pid, 30)
            except (ValueError, IndexError, ProcessLookupError):
                pass
            pid_file.unlink(missing_ok=True)
        self._restore_kvm()

    def _open_kvm(self) -> None:
        if not KVM.exists() or self.kvm_record.exists():
            return
        st = KVM.stat()
        try:
            kvm_gid = grp.getgrnam("kvm").gr_gid
        except KeyError:
            return
        if st.st_gid == kvm_gid and st.st_mode & 0o060 == 0o060:
            return
        self.kvm_record.write_text(json.dumps({"mode": st.st_mode & 0o7777, "gid": st.st_gid}))
        os.chown(KVM, -1, kvm_gid)
        KVM.chmod(0o660)

    def _restore_kvm(self) -> None:
        if not self.kvm_record.exists():
            return
        old = json.loads(self.kvm_record.read_text())
        os.chown(KVM, -1, old["gid"])
        KVM.chmod(old["mode"])
        self.kvm_record.unlink()


def _is(pid: int, name: str) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def sweep() -> list[str]:
    """Remove every domain, volume and network of the lab that is left; say what went."""
    removed = []
    for domain in virsh("list", "--all", "--name").split():
        if domain.startswith(PREFIX):
            virsh("destroy", domain, check=False)
            virsh("undefine", domain, "--nvram", check=False)
            removed.append(f"domain {domain}")
    for pool in virsh("pool-list", "--name").split():
        for line in virsh("vol-list", pool, check=False).splitlines()[2:]:
            words = line.split()
            if words and words[0].startswith(PREFIX):
                virsh("vol-delete", words[0], "--pool", pool, check=False)
                removed.append(f"volume {words[0]}")
    for network in virsh("net-list", "--all", "--name").split():
        if network.startswith(PREFIX):
            virsh("net-destroy", network, check=False)
            virsh("net-undefine", network, check=False)
            removed.append(f"network {network}")
    return removed


def kvm_boots(kernel: Path, initrd: Path, record: Path, timeout: float = 30) -> bool:
    """Whether KVM boots this kernel as far as its init; the answer is kept in `record`."""
    if not KVM.exists():
        return False
    key = f"{kernel.stat().st_size}:{kernel.stat().st_mtime_ns}"
    if record.exists():
        known = json.loads(record.read_text())
        if known.get("kernel") == key:
            return known["boots"]
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults",
            "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel", str(kernel),
            "-initrd", str(initrd), "-append", "console=ttyS0 panic=-1"]
    boots = False
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        os.set_blocking(process.stdout.fileno(), False)
        seen = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            seen += process.stdout.read() or b""
            if b"Run /init as init process" in seen:
                boots = True
                break
            time.sleep(0.2)
    finally:
        process.kill()
        process.wait()
    record.write_text(json.dumps({"kernel": key, "boots": boots}))
    return boots
