"""The lab's own parts that need no root: reading units, the run log, the
SSH relay, the node manifest, the command line."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from lab import lab_class, open_lab
from lab.__main__ import build_parser
from lab.base import REPO
from lab.local import RELAY, LocalLab
from lab.local.units import UnitError, command, parse_environment_file, parse_unit
from tests.conftest import need
from tests.integration.lab.checks import Run, parse_runs_log

# Debian 12's /lib/systemd/system/etcd.service (etcd-server 3.4.23)
ETCD_UNIT = """\
[Unit]
Description=etcd - highly-available key value store
After=network.target

[Service]
Environment=DAEMON_ARGS=
Environment=ETCD_NAME=%H
Environment=ETCD_DATA_DIR=/var/lib/etcd/default
EnvironmentFile=-/etc/default/%p
Type=notify
User=etcd
PermissionsStartOnly=true
#ExecStart=/bin/sh -c "GOMAXPROCS=$(nproc) /usr/bin/etcd $DAEMON_ARGS"
ExecStart=/usr/bin/etcd $DAEMON_ARGS
Restart=on-abnormal
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""

# As trigger::watch::etcd renders it (words quoted, '%' and '$' doubled)
WATCH_UNIT = """\
# Managed by Puppet (trigger::watch::etcd); local changes are overwritten.
[Service]
Type=simple
Environment="TS_SOCKET=/run/trigger-tsp.socket"
ExecStart=/usr/local/bin/trigger "watch" "--host" "node1" "--run-cmd" "puppet apply /x/50%%.pp" "--prefix" "/p$$x"
Restart=always
RestartSec=2
"""

ETCD_DEFAULT = '''\
# Managed by Puppet
ETCD_NAME="node2"
ETCD_DATA_DIR="/var/lib/etcd/trigger"
ETCD_INITIAL_CLUSTER="node1=http://a:2380,node2=http://b:2380"
'''


def test_the_debian_etcd_unit_with_the_modules_settings():
    unit = parse_unit("etcd.service", ETCD_UNIT)
    assert (unit.user, unit.restart) == ("etcd", "on-abnormal")
    files = {"/etc/default/etcd": ETCD_DEFAULT}
    cmd = command(unit, "node2", {"PATH": "/usr/bin"}, files.get)
    assert cmd.argv == ("/usr/bin/etcd",)  # an empty $DAEMON_ARGS is no word at all
    assert cmd.env["ETCD_NAME"] == "node2"  # the file wins over Environment=
    assert cmd.env["ETCD_DATA_DIR"] == "/var/lib/etcd/trigger"
    assert cmd.env["ETCD_INITIAL_CLUSTER"] == "node1=http://a:2380,node2=http://b:2380"
    assert cmd.user == "etcd"


def test_the_etcd_unit_without_its_optional_file_uses_its_own_defaults():
    cmd = command(parse_unit("etcd.service", ETCD_UNIT), "node7", {}, lambda path: None)
    assert cmd.env["ETCD_NAME"] == "node7" and cmd.env["ETCD_DATA_DIR"] == "/var/lib/etcd/default"


def test_the_watch_unit_as_the_module_renders_it():
    unit = parse_unit("trigger-watch.service", WATCH_UNIT)
    assert (unit.restart, unit.restart_sec) == ("always", 2.0)
    cmd = command(unit, "node1", {})
    assert cmd.argv == ("/usr/local/bin/trigger", "watch", "--host", "node1",
                        "--run-cmd", "puppet apply /x/50%.pp", "--prefix", "/p$x")
    assert cmd.env == {"TS_SOCKET": "/run/trigger-tsp.socket"}
    assert cmd.user is None


def test_dollar_words_split_unless_braced_or_quoted():
    unit = parse_unit("x.service", '[Service]\nEnvironment="A=1 2"\nExecStart=/bin/x $A ${A} "$A"\n')
    assert command(unit, "h", {}).argv == ("/bin/x", "1", "2", "1 2", "1 2")


@pytest.mark.parametrize("text, message", [
    ("[Service]\nType=simple\n", "no ExecStart"),
    ("[Service]\nExecStart=x\n", "absolute path"),
    ("[Service]\nExecStart=/bin/x %i\n", "specifier %i"),
    ("[Service]\nExecStart=/bin/x\nRestart=sometimes\n", "Restart=sometimes"),
])
def test_units_the_lab_cannot_run_are_refused_with_the_reason(text, message):
    with pytest.raises(UnitError, match=message):
        command(parse_unit("bad.service", text), "h", {})


def test_a_required_environment_file_that_is_missing_is_an_error():
    unit = parse_unit("x.service", "[Service]\nEnvironmentFile=/etc/x\nExecStart=/bin/x\n")
    with pytest.raises(UnitError, match="/etc/x is missing"):
        command(unit, "h", {}, lambda path: None)


def test_environment_files_keep_values_verbatim():
    assert parse_environment_file("# c\nA='x y'\nB=\"$HOME\"\n C = 3\n") == {"A": "x y", "B": "$HOME", "C": "3"}


def test_the_run_log_lines():
    text = "1795517834.98 0006-aa 1 node3\n1795517835.5 - 0 -\ngarbage\n"
    assert parse_runs_log(text) == [Run(1795517834.98, "0006-aa", 1, ("node3",)), Run(1795517835.5, "-", 0, ())]


def test_the_relay_carries_a_conversation_both_ways():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo_upper():
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(data.upper())

    thread = threading.Thread(target=echo_upper, daemon=True)
    thread.start()
    payload = b"ssh-2.0 hello\n" * 10000
    done = subprocess.run([sys.executable, "-I", str(RELAY), "127.0.0.1", str(port)],
                          input=payload, capture_output=True, timeout=20)
    server.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout == payload.upper()


def test_the_relay_says_where_it_could_not_connect():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
    done = subprocess.run([sys.executable, "-I", str(RELAY), "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 1 and f"127.0.0.1:{port}" in done.stderr


def test_the_node_manifest_parses():
    puppet = need("puppet", "puppet")
    done = subprocess.run([puppet, "parser", "validate", str(REPO / "lab/puppet/node.pp")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_backends_are_chosen_by_name():
    assert lab_class("local") is LocalLab
    assert lab_class("vagrant").backend == "vagrant"
    with pytest.raises(ValueError, match="unknown lab 'docker'"):
        open_lab("docker")


def test_a_local_lab_has_fixed_nodes_and_its_own_places(tmp_path):
    the_lab = LocalLab(name="t1", root=tmp_path)
    assert the_lab.nodes == ("node1", "node2", "node3")
    assert [the_lab.address(n) for n in the_lab.nodes] == ["172.30.56.11", "172.30.56.12", "172.30.56.13"]
    assert the_lab.endpoints("node2") == [
        "http://172.30.56.12:2379", "http://172.30.56.11:2379", "http://172.30.56.13:2379"]
    assert the_lab.namespace("node3") == "tlab-t1-node3"
    assert the_lab.ssh_config == tmp_path / "t1" / "ssh" / "ssh_config"
    assert not the_lab.exists()
    the_lab.destroy()  # nothing to do, and no error


def test_the_command_line_has_the_lifecycle():
    parser = build_parser()
    for action in ("create", "converge", "verify", "destroy", "status", "test"):
        assert parser.parse_args([action]).action == action
    args = parser.parse_args(["--lab", "vagrant", "ssh", "node1", "--", "tsp", "-l"])
    assert (args.lab, args.node, args.command) == ("vagrant", "node1", ["tsp", "-l"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--lab", "docker", "status"])
