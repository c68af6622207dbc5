"""The README's promises to a new user: it starts with the two commands CI
runs, and its five-minute quickstart works as written (against a private
etcd and task-spooler, with a real `puppet apply` as the run command)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need
from tests.eventually import eventually
from tests.integration.conftest import Node

README = Path(__file__).resolve().parents[2] / "README.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[str]:
    """The block's command lines, comments and blank lines dropped."""
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_the_readme_starts_with_the_two_commands_ci_needs():
    text = README.read_text()
    first = code_blocks(text)[0]
    assert text.index(first) < text.index("\n## ")  # before any section
    assert commands(first)[:2] == [
        "scripts/setup.sh && .venv/bin/trigger-sim run simulator/scenarios/seed.yaml", "scripts/test.sh"]


@pytest.mark.etcd
@pytest.mark.tsp
@pytest.mark.puppet
@pytest.mark.slow
def test_the_quickstart_works_as_written(tmp_path, etcd_server):
    need("tsp", "task-spooler")
    need("puppet", "puppet")
    text = README.read_text()
    section = text[text.index("## Five-minute quickstart"):]
    quickstart = commands(code_blocks(section)[0])
    # Past installing etcd and the virtualenv (this test has both): the user's own steps.
    steps = [line.replace("/tmp/hello.pp", str(tmp_path / "hello.pp"))
             for line in quickstart if line.startswith(("echo ", "trigger "))]
    watch = [step for step in steps if step.startswith("trigger watch")]
    assert len(watch) == 1 and watch[0].endswith("&") and len(steps) >= 5, steps
    node = Node(tmp_path, etcd_server.endpoint)
    env = {**node.env, "ETCDCTL_ENDPOINTS": etcd_server.endpoint,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def shell(step: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", step], env=env, capture_output=True, text=True,
                              timeout=180, cwd=tmp_path)

    watcher = None
    try:
        for step in steps:
            if step.startswith("trigger watch"):
                watcher = subprocess.Popen(shlex.split(step.rstrip("& ")), env=env, cwd=tmp_path,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True)
                # A person types the next command after the watcher has registered.
                eventually(lambda: "alive" in shell("trigger status").stdout, 30, "the watcher to register")
                continue
            done = shell(step)
            assert done.returncode == 0, (step, done.stdout, done.stderr)
            if step.startswith("trigger fire"):
                assert re.search(r"web01\.example\.com\s+ok\s+0\s", done.stdout), done.stdout
            if step.startswith("trigger history"):
                assert "hello" in done.stdout
    finally:
        if watcher is not None and watcher.poll() is None:
            os.killpg(watcher.pid, signal.SIGTERM)
            watcher.wait(30)
        node.close()
