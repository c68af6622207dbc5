"""A queued run loads the installed trigger, whatever directory the watcher runs in.

The watcher is started as its service starts it (the `trigger` console
script, `trigger-watch.service`'s ExecStart) but from a working directory
holding a decoy `trigger/` package; a run started as `python -m trigger`
there would import the decoy, with the run's rights.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import RECORDER

pytestmark = [pytest.mark.etcd, pytest.mark.tsp]


def test_a_run_never_imports_a_trigger_package_from_the_watchers_directory(node, tmp_path):
    decoy = tmp_path / "cwd"
    marker = tmp_path / "decoy-was-imported"
    (decoy / "trigger").mkdir(parents=True)
    (decoy / "trigger" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\n")
    (decoy / "trigger" / "__main__.py").write_text("raise SystemExit(97)\n")
    script = Path(sys.executable).with_name("trigger")
    assert script.exists(), f"the console script {script} is not installed"
    run_cmd = f"{sys.executable} {RECORDER} {node.log} 0.1"
    node.proc = subprocess.Popen(
        [str(script), "watch", "--host", node.host, "--queue", "tsp", "--endpoints", node.endpoint,
         "--run-cmd", run_cmd, "--check-interval", "0.3", "--member-ttl", "2"],
        cwd=decoy, env=node.env, stdout=subprocess.DEVNULL, stderr=open(node.watch_log, "a"),
        start_new_session=True)
    node.wait_in_sync()
    node.fire()
    unserved = node.wait_served(timeout=20)
    listing = "\n".join(node.tsp("-l").splitlines()[:3])
    assert not marker.exists(), f"a queued run imported the decoy trigger/ package: {listing}"
    assert unserved == [], f"the fire was not served: {listing}"
