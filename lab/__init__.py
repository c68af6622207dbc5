"""A lab of three trigger nodes that tests reach over SSH, like Molecule's.

Two backends, chosen by name, with one interface (`lab.base.Lab`):

    local    three nodes on this machine, each in network, UTS, mount and PID
             namespaces of its own (needs root); what CI runs
    vagrant  three Debian 12 VMs from the repository's Vagrantfile (needs
             Vagrant and a provider: VirtualBox or libvirt)

Both give nodes `node1`..`node3`, an ssh-config file for testinfra
(`--hosts=ssh://node1 --ssh-config=FILE`), `run(node, argv)`, and the
lifecycle `create`, `converge`, `verify`, `destroy`; `python -m lab` is the
command line for it, so a lab can stay up between test runs.

This module stays import-light: nodeinit.py, which runs inside a node with
the system Python, imports `lab.local.units` through it.
"""

from __future__ import annotations

import importlib

BACKENDS = {
    "local": "lab.local:LocalLab",
    "vagrant": "lab.vagrant:VagrantLab",
}


def lab_class(backend: str):
    """The Lab subclass registered under `backend` ("local" or "vagrant")."""
    try:
        module_name, class_name = BACKENDS[backend].split(":")
    except KeyError:
        raise ValueError(f"unknown lab {backend!r}: choose one of {', '.join(BACKENDS)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def open_lab(backend: str = "local", **options):
    """A Lab object for `backend`; nothing is created until `create()`."""
    return lab_class(backend)(**options)
