"""The lab under test: `--lab=local` (default, CI) or `--lab=vagrant`.

One lab per session: made fresh (after removing whatever an interrupted
session left) for the first test here and destroyed after the last (the
fixture is package-scoped, so it does not idle through the rest of the
suite), also when a test fails, on Ctrl-C and on SIGTERM. With `--lab-reuse` the tests use the lab that
`python -m lab converge` brought up and leave it up (`python -m lab verify`
does that).

    pytest tests/integration/lab                      # a fresh local lab
    pytest tests/integration/lab --lab=vagrant        # the Vagrantfile's VMs
    python -m lab converge && python -m lab verify    # keep the lab between runs

pytest reads `--lab` only where this file is loaded at start-up: give the
directory (or a file in it) on the command line.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Callable

import pytest

from lab import open_lab
from lab.base import LabError
from lab.local import claimed_lab
from lab.local.master import MasterLab
from tests.conftest import IN_CI, need, need_root
from tests.integration.lab import checks
from trigger.layout import Layout


# The first test here also waits for the lab to be made (Vagrant VMs under
# emulation: up to 15 min), which pytest-timeout counts in its time.
LAB_TEST_TIMEOUT = 1800


def pytest_collection_modifyitems(items):
    here = __file__.rsplit("/", 1)[0] + "/"
    for item in items:
        if str(item.path).startswith(here) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LAB_TEST_TIMEOUT))


def _need_backend(backend: str) -> None:
    if backend == "local":
        need_root()
        from lab.local import missing_programs

        for program, package in sorted(missing_programs().items()):
            need(program, package)
    else:
        from lab.vagrant import unavailable

        reason = unavailable()
        if reason:
            # Asked for by name (--lab=vagrant): in CI a missing part is a failure.
            (pytest.fail if IN_CI else pytest.skip)(f"vagrant lab: {reason}")


@pytest.fixture(scope="package")
def lab(request):
    """The lab, converged: etcd cluster healthy, a watcher on every node."""
    backend = request.config.getoption("--lab")
    reuse = request.config.getoption("--lab-reuse")
    _need_backend(backend)
    name = request.config.getoption("--lab-name")
    master = request.config.getoption("--lab-master")
    if master:
        _need_master(backend)
    if reuse:
        the_lab = _open(backend, master, name or ("master" if master else "dev"))
        if not all(s["state"] == "up" for s in the_lab.status().values()):
            pytest.fail(f"--lab-reuse: the {backend} lab is not up; run `python -m lab --lab {backend} converge`")
        yield the_lab
        return
    if backend == "local" and not name:
        # a name no other running session holds
        claim = claimed_lab("pmaster", lab_class=MasterLab) if master else claimed_lab("pytest")
    else:
        claim = contextlib.nullcontext(_open(backend, master, name))
    with fresh_lab(claim, backend) as the_lab:
        yield the_lab


@contextlib.contextmanager
def fresh_lab(claim, what: str, converge: Callable = lambda lab: lab.converge()):
    """The claimed lab made fresh and converged (`converge(lab)`), destroyed afterwards:
    also when a test fails, on Ctrl-C, and on SIGTERM (a CI timeout, kill), which unwinds
    like Ctrl-C here. `what` names the lab in the failure if it does not come up."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with claim as lab:
            try:
                lab.destroy()  # whatever an interrupted session left
                try:
                    lab.create()
                    converge(lab)
                except LabError as exc:
                    pytest.fail(f"the {what} lab did not come up: {exc}", pytrace=False)
                yield lab
            finally:
                lab.destroy()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _need_master(backend: str) -> None:
    if backend != "local":
        pytest.fail("--lab-master is a local lab: drop --lab=vagrant")
    from lab.local.master import missing_packages

    missing = missing_packages()
    if missing:
        (pytest.fail if IN_CI else pytest.skip)(
            f"master lab: install the Debian packages {', '.join(missing)} (scripts/setup.sh --master)")


def _open(backend: str, master: bool, name: str | None):
    if master:
        return MasterLab(**({"name": name} if name else {}))
    return open_lab(backend, **({"name": name} if name else {}))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="package")
def hosts(lab):
    """testinfra hosts by node name, reached over SSH with the lab's ssh-config."""
    import testinfra

    checks.TIME_SCALE = lab.time_scale
    timeout = int(10 * lab.time_scale)  # testinfra's SSH connect timeout, 10 s by default
    return {node: testinfra.get_host(f"ssh://{node}", ssh_config=str(lab.ssh_config), sudo=lab.sudo,
                                     timeout=timeout)
            for node in lab.nodes}


@pytest.fixture
def node1(hosts):
    return hosts["node1"]


@pytest.fixture
def node2(hosts):
    return hosts["node2"]


@pytest.fixture
def node3(hosts):
    return hosts["node3"]


@pytest.fixture
def settled(lab, hosts):
    """Before the test: no run queued or running, no fire waiting, on any node."""
    layout = Layout()

    def quiet():
        for node, host in hosts.items():
            if not checks.idle(host):
                return False
            keys = host.check_output(checks.etcdctl(
                lab.endpoints(node), f"get --prefix --keys-only {layout.host_prefix(node)}")).split()
            if any(layout.classify(node, key)[0] == "entry" for key in keys):
                return False
        return True

    checks.wait_until(quiet, 120, "the lab did not settle: runs or fires still outstanding")
    yield

