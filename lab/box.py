"""The Vagrant lab's box, built here from Debian packages only.

    python -m lab box        build it (or find it cached) and add it to Vagrant

A box is a root filesystem made by debootstrap (minbase, bookworm, with
systemd, sshd, Python, a kernel and the lab's packages), configured for
Vagrant (the `vagrant` user with Vagrant's insecure key and passwordless
sudo, systemd-networkd with a catch-all DHCP network so Vagrant's own
network files win, host keys made at first boot), written into an ext4
image with `mkfs.ext4 -d` and converted to qcow2. It boots its kernel
directly (libvirt's `kernel`/`initrd`/`cmd_line`): no bootloader.

Two caches, each keyed by a hash of its recipe: the debootstrapped root
filesystem (keyed by suite and packages; the slow part) and the box (keyed
by that and the configuration below). A change to the configuration rebuilds
the box from the cached root filesystem in seconds.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .base import LabError

CACHE = Path(os.environ.get("TRIGGER_LAB_CACHE", "/var/tmp/trigger-lab/cache"))
VAGRANT_HOME = CACHE / "vagrant-home"  # Vagrant's boxes live here, not in ~/.vagrant.d
SUITE = "bookworm"
IMAGE_GIB = 4
CMD_LINE = "root=/dev/vda rw console=ttyS0"

# The Debian packages of the box: a bootable systemd node reachable by Vagrant,
# and what the lab's nodes run (the VMs have no network beyond the host).
PACKAGES = (
    "systemd-sysv", "dbus", "libpam-systemd", "systemd-resolved", "openssh-server", "sudo",
    "python3", "python3-venv", "rsync", "iproute2", "procps", "linux-image-amd64",
    "task-spooler", "etcd-server", "etcd-client", "puppet",
)

# Host programs the build runs, and their Debian packages.
BUILD_PROGRAMS = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs", "qemu-img": "qemu-utils",
                  "vagrant": "vagrant", "chroot": "coreutils"}

# What turns the debootstrapped tree into a Vagrant box: files, then commands in a chroot.
FILES = {
    "etc/fstab": "/dev/vda / ext4 defaults 0 1\n",
    "etc/hostname": "trigger-lab\n",
    # Vagrant writes 50-vagrant-*.network files for its networks; this one
    # only catches what they do not (the management interface).
    "etc/systemd/network/99-dhcp.network": "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n",
    "etc/sudoers.d/vagrant": "vagrant ALL=(ALL) NOPASSWD: ALL\n",
    # ed25519 and ecdsa keys only: an RSA key takes seconds under emulation.
    "etc/ssh/sshd_config.d/trigger-lab.conf": (
        "HostKey /etc/ssh/ssh_host_ed25519_key\nHostKey /etc/ssh/ssh_host_ecdsa_key\nUseDNS no\n"),
    "etc/systemd/system/trigger-lab-host-keys.service": """\
[Unit]
Description=SSH host keys of this node, made at its first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -N "" -t ed25519 -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -N "" -t ecdsa -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=multi-user.target
""",
}
CHROOT_COMMANDS = (
    ["useradd", "--create-home", "--shell", "/bin/bash", "vagrant"],
    ["systemctl", "enable", "systemd-networkd", "systemd-resolved", "trigger-lab-host-keys"],
    # Nothing that works at boot for nothing: a scrub, apt's timers, Puppet's
    # agent daemon (the lab applies manifests), etcd with the package's
    # settings (the module starts it with the lab's).
    ["systemctl", "mask", "e2scrub_reap.service", "apt-daily.timer", "apt-daily-upgrade.timer"],
    ["systemctl", "disable", "puppet.service", "etcd.service"],
)


@dataclass
class Phases:
    """How long each phase took, in the order they ran."""

    times: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, step, *args):
        started = time.monotonic()
        result = step(*args)
        self.times[name] = time.monotonic() - started
        return result

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.0f} s" for name, seconds in self.times.items()) or "nothing to do"


@dataclass(frozen=True)
class Box:
    """One recipe's box: where its files are and what Vagrant calls it."""

    rootfs_key: str
    key: str

    @property
    def name(self) -> str:
        return f"trigger-lab-{self.key}"

    @property
    def dir(self) -> Path:
        return CACHE / "boxes" / self.key

    @property
    def rootfs(self) -> Path:
        return CACHE / "rootfs" / self.rootfs_key

    @property
    def kernel(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"


def recipe() -> Box:
    """The box this recipe makes (nothing is built)."""
    rootfs_key = _digest({"suite": SUITE, "packages": sorted(PACKAGES)})
    key = _digest({"rootfs": rootfs_key, "files": FILES, "commands": CHROOT_COMMANDS,
                   "image_gib": IMAGE_GIB, "cmd_line": CMD_LINE})
    return Box(rootfs_key, key)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def vagrant_env() -> dict[str, str]:
    """The environment every Vagrant call of the lab runs with."""
    return {**os.environ, "VAGRANT_HOME": str(VAGRANT_HOME), "VAGRANT_CHECKPOINT_DISABLE": "1"}


def is_added(box: Box) -> bool:
    """Whether Vagrant has this box and the kernel it boots is there."""
    if not (box.kernel.exists() and box.initrd.exists()):
        return False
    listed = subprocess.run(["vagrant", "box", "list", "--machine-readable"], env=vagrant_env(),
                            capture_output=True, text=True)
    return f",box-name,{box.name}\n" in listed.stdout


def build(log=print) -> tuple[Box, Phases]:
    """Build (or find cached) and add the box to Vagrant; returns it and the phase times."""
    box = recipe()
    phases = Phases()
    if is_added(box):
        log(f"box {box.name}: cached in {box.dir}")
        return box, phases
    missing = missing_programs()
    if missing:
        raise LabError("missing Debian packages for the box: " + ", ".join(sorted(set(missing.values())))
                       + " (scripts/setup.sh --vagrant)")
    if not (box.rootfs / ".complete").exists():
        log(f"box: debootstrap {SUITE} with {len(PACKAGES)} packages into {box.rootfs} (about 2 minutes)")
        phases.run("debootstrap", _debootstrap, box.rootfs)
    work = box.dir / "rootfs"
    try:
        phases.run("configure", _configure, box, work)
        phases.run("image", _image, box, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    phases.run("vagrant box add", _add, box)
    log(f"box {box.name}: built ({phases})")
    return box, phases


def missing_programs() -> dict[str, str]:
    return {p: pkg for p, pkg in BUILD_PROGRAMS.items() if shutil.which(p) is None}


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses for its main archive."""
    texts = [Path(p).read_text() for p in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]
             if Path(p).is_file()]
    url = mirror_in(texts)
    if url is None:
        raise LabError("no Debian mirror in /etc/apt/sources.list*: the box is built from the host's apt mirror")
    return url


def mirror_in(texts: list[str]) -> str | None:
    """The first main Debian archive in apt sources (one-line or deb822 format)."""
    for text in texts:
        for url in re.findall(r"^(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)", text, re.MULTILINE):
            if url.rstrip("/").endswith("/debian"):
                return url
    return None


def _run(argv: list[str], what: str, **kwargs) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise LabError(f"{what} failed ({done.returncode}): {' | '.join(tail)}")


def _debootstrap(rootfs: Path) -> None:
    partial = rootfs.with_name(rootfs.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              "--cache-dir=/var/cache/apt/archives", SUITE, str(partial), debian_mirror()],
             "debootstrap", env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        (partial / "var/cache/apt/archives").mkdir(exist_ok=True)
        for deb in (partial / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        (partial / ".complete").touch()
        partial.rename(rootfs)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _configure(box: Box, work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    box.dir.mkdir(parents=True, exist_ok=True)
    box.dir.chmod(0o755)  # libvirt's qemu user reads the kernel from here
    _run(["cp", "-a", "--reflink=auto", str(box.rootfs), str(work)], "copying the root filesystem")
    (work / ".complete").unlink()
    for path, text in FILES.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    (work / "etc/sudoers.d/vagrant").chmod(0o440)
    for argv in CHROOT_COMMANDS:
        _run(["chroot", str(work), *argv], f"chroot {' '.join(argv)}")
    ssh_dir = work / "home/vagrant/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(vagrant_insecure_key())
    _run(["chroot", str(work), "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"], "chown ~vagrant/.ssh")
    for key in (work / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # each node makes its own at first boot
    # An empty machine-id: systemd makes one at first boot, so each VM gets
    # its own (and its own DHCP client id).
    (work / "etc/machine-id").write_text("")
    (work / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    kernels = sorted((work / "boot").glob("vmlinuz-*"))
    initrds = sorted((work / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise LabError(f"no kernel or initrd in {work}/boot: is linux-image-amd64 installed?")
    shutil.copyfile(kernels[-1], box.kernel)
    shutil.copyfile(initrds[-1], box.initrd)
    for path in (box.kernel, box.initrd):
        path.chmod(0o644)


def vagrant_insecure_key() -> str:
    """Vagrant's well-known public key, as Debian's vagrant package ships it."""
    found = sorted(glob.glob("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub")
                   + glob.glob("/usr/share/vagrant/keys/vagrant.pub"))
    if not found:
        raise LabError("Vagrant's insecure public key (keys/vagrant.pub) not found: install the Debian package vagrant")
    return Path(found[0]).read_text()


def _image(box: Box, work: Path) -> None:
    raw = box.dir / "box.raw"
    try:
        with open(raw, "wb") as f:
            f.truncate(IMAGE_GIB << 30)
        _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(work), str(raw)], "mkfs.ext4")
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(box.dir / "box.img")], "qemu-img convert")
    finally:
        raw.unlink(missing_ok=True)
    (box.dir / "metadata.json").write_text(json.dumps(
        {"provider": "libvirt", "format": "qcow2", "virtual_size": IMAGE_GIB}))
    # The box boots its own kernel: the lab's Vagrantfile needs no box details.
    (box.dir / "Vagrantfile").write_text(f"""\
# trigger lab box {box.name} (lab/box.py): direct kernel boot, no bootloader
Vagrant.configure("2") do |config|
  config.vm.provider "libvirt" do |lv|
    lv.kernel = "{box.kernel}"
    lv.initrd = "{box.initrd}"
    lv.cmd_line = "{CMD_LINE}"
  end
end
""")


def _add(box: Box) -> None:
    archive = box.dir / f"{box.name}.box"
    try:
        with tarfile.open(archive, "w") as tar:
            for name in ("metadata.json", "Vagrantfile", "box.img"):
                tar.add(box.dir / name, arcname=name)
        (box.dir / "box.img").unlink()  # the archive and Vagrant's copy hold it now
        _run(["vagrant", "box", "add", "--force", "--name", box.name, str(archive)], "vagrant box add",
             env=vagrant_env())
    finally:
        archive.unlink(missing_ok=True)
