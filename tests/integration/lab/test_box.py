"""The Vagrant lab's box recipe (lab/box.py), without building it: its cache
keys, where it finds the Debian mirror, what it says about phases."""

from __future__ import annotations

import pytest

from lab import box
from lab.base import LabError

SOURCES_DEB822 = """\
Types: deb
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
"""


def test_the_box_is_keyed_by_its_recipe(monkeypatch):
    first = box.recipe()
    assert first == box.recipe() and first.name == f"trigger-lab-{first.key}"
    monkeypatch.setitem(box.FILES, "etc/motd", "hello\n")
    changed = box.recipe()
    # A change to the configuration makes a new box from the same root filesystem.
    assert changed.key != first.key and changed.rootfs_key == first.rootfs_key
    monkeypatch.setattr(box, "PACKAGES", (*box.PACKAGES, "less"))
    assert box.recipe().rootfs_key != first.rootfs_key


def test_the_box_boots_its_own_kernel_from_a_place_libvirt_reads():
    the_box = box.recipe()
    assert the_box.kernel.parent == the_box.dir == box.CACHE / "boxes" / the_box.key
    assert "root=/dev/vda" in box.CMD_LINE and "console=ttyS0" in box.CMD_LINE


def test_the_mirror_comes_from_the_hosts_apt_sources():
    assert box.mirror_in(["# nothing\n", SOURCES_DEB822]) == "http://mirror.invalid/debian"
    assert box.mirror_in(["deb [arch=amd64] http://m.invalid/debian/ bookworm main\n"]) == "http://m.invalid/debian/"
    assert box.mirror_in(["deb http://m.invalid/ubuntu jammy main\n"]) is None


def test_phases_say_how_long_each_took():
    phases = box.Phases()
    assert str(phases) == "nothing to do"
    assert phases.run("configure", lambda x: x * 2, 21) == 42
    assert list(phases.times) == ["configure"] and str(phases).startswith("configure 0 s")


def test_a_missing_build_program_is_named_with_its_package(monkeypatch):
    monkeypatch.setattr(box.shutil, "which", lambda program: None if program == "debootstrap" else "/bin/x")
    monkeypatch.setattr(box, "is_added", lambda b: False)
    with pytest.raises(LabError, match=r"^missing Debian packages for the box: debootstrap \(scripts/setup.sh --vagrant\)$"):
        box.build(log=lambda line: None)
