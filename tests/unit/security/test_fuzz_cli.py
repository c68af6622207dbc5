"""`trigger.cli.main` with random command lines, in-process.

For every argv: `main` returns an int, or argparse exits with 2 (0 for
--help); no other exception escapes. Nothing is executed: subprocess.Popen
and the os exec/spawn/system functions are replaced by tripwires. The one
subcommand that runs a configured command per host, `fire --provider exec`,
may reach Popen, and then only with an argv list built from --exec-cmd,
never a shell. etcd is unreachable by construction: every gRPC channel
goes to a closed loopback port, whatever --endpoints says (no DNS, no
network), so `run` never gets to start its command either.
"""

from __future__ import annotations

import io
import os
import shlex
import signal
import sys

import grpc

from trigger.driver import RealDriver
from trigger.effects import Sleep
import pytest
from hypothesis import given
from hypothesis import strategies as st

import trigger.cli as cli
from trigger.commands import fire as fire_command
from trigger.records import BadRecord
from trigger.providers import exec_argv

from .conftest import bounded_memory, fuzz_settings
from .strategies import SHELLISH

pytestmark = pytest.mark.fuzz

CLOSED = "127.0.0.1:1"  # nothing listens on port 1 here: connections are refused at once

SUBCOMMANDS = [["fire"], ["watch"], ["run"], ["status"], ["history"], ["leader"], ["auth"],
               ["auth", "setup"]]
OPTIONS = ["--hosts", "--ttl", "--provider", "--exec-cmd", "--max-concurrent", "--serial", "--wait",
           "--timeout", "--ok-codes", "--retention", "--host", "--run-cmd", "--queue",
           "--check-interval", "--roles", "--elections", "--config-dir", "--member-ttl", "--run-id",
           "--json", "--limit", "--prefix", "--endpoints", "--cacert", "--cert", "--key", "--user",
           "--password-file", "--firers", "--password-dir", "--root-password-file", "--no-enable",
           "--dry-run", "--", "-h", "--help", "--bogus"]


def _files(tmp: str) -> list[str]:
    return [f"{tmp}/missing.pem", "/dev/null", "/dev/zero", "/etc/hostname", tmp,
            f"{tmp}/file.txt", "/proc/self/status"]


@st.composite
def argvs(draw, tmp: str):
    words = st.one_of(
        st.sampled_from(["web1", "web1,web2", "role:lb", "node1.test", "refresh", "0", "-1", "1e400",
                         "nan", "inf", "99999999999999999999999", "2", "0,2", "etcd", "dummy", "exec",
                         "tsp", "inline", "/puppet_trigger/events", "/", "x/", "root", "a:b", ":",
                         "http://127.0.0.1:1", "https://127.0.0.1:1", "127.0.0.1:1", "ftp://x",
                         "http://[::1]:1", "https://h:notaport", "unix:///tmp/x",
                         "mco puppet runonce -I {host}", "touch {host}", "sh -c 'id' {host}",
                         "'unbalanced", "{host}", "puppet agent --test"]),
        st.sampled_from(_files(tmp)),
        st.sampled_from(SHELLISH),
        st.text(max_size=20),
    )
    argv = list(draw(st.sampled_from(SUBCOMMANDS)))
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            argv.append(draw(st.sampled_from(OPTIONS)))
        argv.append(draw(words))
    if draw(st.integers(0, 4)) == 0:
        draw(st.randoms()).shuffle(argv)
    return argv


class Tripwire(Exception):
    """Something tried to execute a program."""


@pytest.fixture
def sandbox(monkeypatch, tmp_path):
    (tmp_path / "file.txt").write_text("hello\n")
    monkeypatch.chdir(tmp_path)  # a relative path given to an option lands here
    calls: list[tuple] = []

    class FakePopen:
        def __init__(self, args, *rest, **kwargs):
            calls.append((args, kwargs))
            raise FileNotFoundError(2, "No such file or directory (fuzz sandbox)")

    def tripwire(*args, **kwargs):
        raise Tripwire(f"tried to execute: {args!r}")

    monkeypatch.setattr("subprocess.Popen", FakePopen)
    for name in ("system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execlp",
                 "spawnv", "spawnvp", "posix_spawn", "posix_spawnp", "fork", "forkpty"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, tripwire)
    real_insecure, real_secure = grpc.insecure_channel, grpc.secure_channel
    monkeypatch.setattr(grpc, "insecure_channel", lambda target, *a, **k: real_insecure(CLOSED, *a, **k))
    monkeypatch.setattr(grpc, "secure_channel", lambda target, *a, **k: real_secure(CLOSED, *a, **k))
    # A watcher would run forever: it gets as far as starting, then returns.
    monkeypatch.setattr("trigger.watch.WatchDaemon.run_forever", lambda self: None)
    monkeypatch.setitem(RealDriver._handlers, Sleep, lambda driver, effect: None)  # `run` retrying etcd
    for name in list(os.environ):
        if name.startswith("ETCDCTL_") or name.startswith("TRIGGER_"):
            monkeypatch.delenv(name)
    return tmp_path, calls


def _streams():
    """stdout and stderr as a real process has them under a UTF-8 locale:
    stdout strict, stderr backslash-escaping what it cannot encode (an
    argument that is not UTF-8 reaches Python as lone surrogates)."""
    return (io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict"),
            io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace"))


def _text(stream) -> str:
    stream.flush()
    return stream.buffer.getvalue().decode("utf-8")


def _run(argv, calls):
    env, handlers = dict(os.environ), {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    calls.clear()
    out, err = _streams()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        try:
            with bounded_memory("cli"):
                code = cli.main(argv)
        except SystemExit as exc:
            helped = "-h" in argv or "--help" in argv
            assert exc.code == 2 or (helped and exc.code == 0), (argv, exc.code)
            return exc.code
        assert isinstance(code, int) and not isinstance(code, bool), (argv, code)
        errors = _text(err)
        assert "Traceback" not in errors
        if code in (1, 2):  # our errors: one line, last
            assert errors.splitlines()[-1].startswith("trigger: error: "), (argv, errors)
        return code
    finally:
        sys.stdout, sys.stderr = saved
        os.environ.clear()
        os.environ.update(env)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _check_executions(argv, calls):
    """Only `fire --provider exec`, only its own template's argv, no shell."""
    if not calls:
        return
    args = cli.build_parser().parse_args(argv)
    assert args.func is fire_command.run and args.provider == "exec", (argv, calls)
    # every --hosts and --hosts-file, lower-cased as `fire` does (DNS names ignore case)
    hosts = [h.strip().lower() for h in fire_command.hosts_text(args).split(",")]
    expected = [exec_argv(args.exec_cmd, h) for h in hosts if h]
    for popen_args, kwargs in calls:
        assert isinstance(popen_args, list), popen_args
        assert not kwargs.get("shell"), kwargs
        assert popen_args in expected, (popen_args, shlex.join(popen_args))


@fuzz_settings(quick=200)
@given(data=st.data())
def test_any_command_line_ends_in_an_exit_code_and_runs_nothing(sandbox, data):
    tmp, calls = sandbox
    argv = data.draw(argvs(str(tmp)))
    _run(argv, calls)
    _check_executions(argv, calls)


@fuzz_settings(quick=100)
@given(data=st.data())
def test_environment_settings_of_any_shape(sandbox, data):
    """etcdctl's environment names hold anything: still one exit code."""
    tmp, calls = sandbox
    text = st.one_of(st.sampled_from(_files(str(tmp)) + ["root", "a:b", ":", "", "https://127.0.0.1:1"]),
                     st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                             max_size=20))
    for name in ("ETCDCTL_ENDPOINTS", "ETCDCTL_CACERT", "ETCDCTL_CERT", "ETCDCTL_KEY",
                 "ETCDCTL_USER", "ETCDCTL_PASSWORD", "TRIGGER_HOP", "TRIGGER_CHAIN"):
        if data.draw(st.booleans()):
            os.environ[name] = data.draw(text)
    argv = data.draw(st.sampled_from([["status"], ["fire", "x", "--hosts", "web1"],
                                      ["run", "--host", "web1", "--run-id", "r1", "--", "true"],
                                      ["watch", "--host", "web1", "--queue", "inline"]]))
    try:
        _run(argv, calls)
    finally:
        for name in list(os.environ):
            if name.startswith("ETCDCTL_") or name.startswith("TRIGGER_"):
                del os.environ[name]
    assert calls == []


HOSTS = ["web1", "node-1.example.com", "a_b", "LB01.dc2.example.org", "x" * 253]
TEMPLATES = ["mco puppet runonce -I {host}", "ssh {host} puppet agent --test",
             "bolt command run 'puppet agent -t' --targets {host}", "touch {host}",
             "sh -c 'id' {host}", "echo {host}; rm -rf /", "echo $(id) `id` {host}",
             "'{host}'\"$HOME\"", "--help {host}", "{host}{host}", "no host here", "", "'unbalanced {host}"]


class ExitedPopen:
    """A process that ran and exited 0 at once: exec_fire goes on to the next host."""

    calls: list[tuple] = []

    def __init__(self, args, *rest, **kwargs):
        self.calls.append((args, kwargs))
        self.args, self.returncode = args, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def communicate(self, *args, **kwargs):
        return None, None

    def poll(self):
        return 0

    def wait(self, timeout=None):
        return 0

    def kill(self):
        pass


@fuzz_settings(quick=100)
@given(data=st.data())
def test_the_exec_provider_runs_its_template_once_per_host_and_never_a_shell(sandbox, monkeypatch, data):
    """The exec half of the CLI, reached for real: every valid fire runs
    exactly the template's argv for each host, in order, without a shell,
    with the hop in its environment; an unusable template runs nothing."""
    _, calls = sandbox
    monkeypatch.setattr("subprocess.Popen", ExitedPopen)
    hosts = data.draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=4, unique=True))
    template = data.draw(st.one_of(st.sampled_from(TEMPLATES),
                                   st.builds(lambda s: f"echo {shlex.quote(s)} {{host}}", st.sampled_from(SHELLISH))))
    cut = data.draw(st.integers(0, len(hosts)))  # the hosts split over two --hosts, or given once
    groups = [g for g in (hosts[:cut], hosts[cut:]) if g]
    argv = ["fire", "refresh", "--provider", "exec", "--exec-cmd", template]
    for group in groups:
        argv += ["--hosts", ",".join(group)]
    ExitedPopen.calls = calls
    code = _run(argv, calls)
    _check_executions(argv, calls)
    try:
        expected = [exec_argv(template, h.lower()) for h in hosts]
    except (ValueError, BadRecord):
        expected = []  # no {host}, empty, or not splittable: a one-line error, nothing run
    assert [args for args, _ in calls] == expected, (argv, calls)
    assert code == (0 if expected else 2), (argv, code)
    for _, kwargs in calls:
        assert kwargs["env"]["TRIGGER_HOP"] == "1" and not kwargs.get("shell"), kwargs
