"""Shared fixtures. A test that needs a program says so through `need()`:
outside CI a missing program skips the test with the package to install;
in CI (CI=true) it fails, so no coverage is claimed that did not run."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from tests.etcd_server import EtcdServer
from tests.processes import kill_started_with, still_running
from trigger.leftovers import name

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        message = f"{program} not found: install the Debian package {package}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def need_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("this test needs root")
        pytest.skip("this test needs root")


# Set for the session and inherited by every process a test starts, so that
# one still alive at the end is known for what the tests left behind.
SESSION_MARK = "TRIGGER_TEST_SESSION"


def pytest_configure(config):
    os.environ[SESSION_MARK] = uuid.uuid4().hex


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down
def pytest_sessionfinish(session):
    """Every process a test started is gone by the end; one left running fails the run, named."""
    left = still_running(SESSION_MARK, os.environ[SESSION_MARK], grace=5.0)
    if left:
        named = name(left)
        kill_started_with(SESSION_MARK, os.environ[SESSION_MARK])
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")
            reporter.write_line(f"left running by the tests (killed now): {named}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_addoption(parser):
    group = parser.getgroup("lab", "trigger test lab (tests/integration/lab)")
    group.addoption("--lab", default="local", choices=("local", "vagrant"),
                    help="the lab backend: local namespaced nodes (default) or Vagrant VMs")
    group.addoption("--lab-reuse", action="store_true",
                    help="use the lab that is up (python -m lab converge) and leave it up")
    group.addoption("--lab-name", default=None,
                    help="name of the local lab (default: pytest, or pytest2... while another "
                         "session runs; with --lab-reuse: dev)")
    group.addoption("--lab-master", action="store_true",
                    help="the master lab (lab/local/master.py): the local nodes as agents of a Puppet "
                         "server with PuppetDB; runs the tests marked `master`, deselected otherwise")


def pytest_collection_modifyitems(config, items):
    """A test for one lab backend only (`@pytest.mark.backend("vagrant")`) is
    deselected on the other, not skipped: a run on namespaced nodes does not
    count what only VMs can show. Tests marked `master` need the master lab
    (--lab-master, scripts/test.sh --master): deselected without it."""
    chosen = config.getoption("--lab")
    master = config.getoption("--lab-master")
    other = [item for item in items
             if ((mark := item.get_closest_marker("backend")) and mark.args[0] != chosen)
             or (item.get_closest_marker("master") and not master)]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [item for item in items if item not in other]


@pytest.fixture
def etcd_server(tmp_path):
    """A fresh single-member etcd on free loopback ports, killed afterwards."""
    need("etcd", "etcd-server")
    server = EtcdServer(tmp_path / "etcd").start()
    try:
        yield server
    finally:
        server.close()
