"""The Vagrantfile is valid wherever Vagrant is installed, even with no
provider to start its VMs (`vagrant validate --ignore-provider`), and it
describes what the Vagrant lab expects."""

from __future__ import annotations

import os
import re
import subprocess

from lab.base import NODES, REPO
from lab.vagrant import ADDRESSES
from tests.conftest import need

VAGRANTFILE = REPO / "Vagrantfile"


def test_vagrant_validates_the_vagrantfile(tmp_path):
    vagrant = need("vagrant", "vagrant")
    env = {
        **os.environ,
        # nothing of this check outlives tmp_path: no .vagrant/ in the repository, no ~/.vagrant.d
        "VAGRANT_DOTFILE_PATH": str(tmp_path / "dotfile"),
        "VAGRANT_HOME": str(tmp_path / "home"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
    }
    done = subprocess.run([vagrant, "validate", "--ignore-provider"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Vagrantfile validated successfully" in done.stdout


def test_the_vagrantfile_has_the_labs_nodes_and_no_discovery_url():
    text = VAGRANTFILE.read_text()
    assert dict(re.findall(r'"(node\d)" => "([\d.]+)"', text)) == ADDRESSES
    assert tuple(ADDRESSES) == NODES
    assert "config.vm.box = BOX" in text  # the box lab/box.py builds, named by its recipe
    assert 'libvirt__forward_mode: "none"' in text and 'management_network_mode = "none"' in text
    assert "lab/vagrant/provision.sh" in text
    assert "lab/puppet/node.pp" in (REPO / "lab/vagrant/provision.sh").read_text()
    assert "ETCD_DISCOVERY" not in text and "--discovery" not in text  # static peers only


def test_a_host_without_memory_for_three_vms_is_told_so(monkeypatch):
    from lab import vagrant as vagrant_lab

    meminfo = "MemTotal: 8000000 kB\nMemAvailable:    3145728 kB\n"
    monkeypatch.setattr(vagrant_lab.Path, "read_text", lambda self: meminfo)
    assert vagrant_lab.memory_shortfall(3) == "3.0 GiB of memory available, 3 VMs need about 6 GiB"
    assert vagrant_lab.memory_shortfall(1) is None


def test_missing_packages_are_named_in_one_line(monkeypatch):
    from lab import vagrant as vagrant_lab

    monkeypatch.setattr(vagrant_lab.shutil, "which", lambda p: None if p in ("virsh", "debootstrap") else "/bin/x")
    monkeypatch.setattr(vagrant_lab, "_glob", lambda pattern: ["plugin"])
    assert vagrant_lab.unavailable() == (
        "missing Debian packages: debootstrap, libvirt-clients (scripts/setup.sh --vagrant)")


def test_the_vagrant_lab_waits_longer_under_emulation(tmp_path):
    from lab.vagrant import VagrantLab

    the_lab = VagrantLab(state_dir=tmp_path / "lab")
    assert not the_lab.exists()
    the_lab.destroy()  # nothing there: nothing to do, no libvirt started
    assert not (tmp_path / "lab").exists()
    (tmp_path / "lab").mkdir()
    the_lab.driver_file.write_text("qemu\n")
    assert the_lab.time_scale == 8.0
    the_lab.driver_file.write_text("kvm\n")
    assert the_lab.time_scale == 1.5


def test_a_box_that_does_not_boot_is_named_with_its_console(tmp_path):
    from lab.vagrant import VagrantLab

    the_lab = VagrantLab(state_dir=tmp_path / "lab")
    the_lab.console_dir.mkdir(parents=True)
    log = tmp_path / "lab" / "vagrant-up.log"
    log.write_text("Bringing machine 'node1' up...\nTimed out while waiting for the machine to boot.\n")
    for node in the_lab.nodes:  # node2 stops in its initramfs: no login prompt
        text = "Debian GNU/Linux 12 node1 ttyS0\n\nnode1 login:" if node != "node2" else "(initramfs) "
        (the_lab.console_dir / f"{node}.log").write_text(text)
    assert the_lab._why_not_up(log) == (
        f"the box did not boot on node2 (console: {the_lab.console_dir / 'node2.log'}); "
        "vagrant: Timed out while waiting for the machine to boot.")
