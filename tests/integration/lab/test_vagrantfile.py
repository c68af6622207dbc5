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
    assert 'config.vm.box = "debian/bookworm64"' in text
    assert "lab/puppet/node.pp" in text
    assert "ETCD_DISCOVERY" not in text and "--discovery" not in text  # static peers only
