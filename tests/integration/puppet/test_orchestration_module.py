"""The module's orchestration features, applied with real Puppet on a real etcd.

Concurrency limits, role targeting, waiting for results, elections read back
with `trigger::leader` and the `trigger_leaders` fact, the exec provider,
and the TLS/user options. Where a watcher is needed it is the real
`trigger watch` with the inline queue and `true`/`false` as the run, killed
by a finalizer; where a command line must be inspected, `puppet apply
--debug` logs each exec's argv.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need
from tests.etcd_server import EtcdServer, ServerTls
from tests.eventually import eventually
from tests.integration.puppet.puppet_apply import (
    BACKTRACE,
    PREFIX,
    REPO,
    Apply,
    clean_env,
    etcd_dump,
    exec_notifying,
    inbox_entries,
    trigger_bin,
)
from tests.integration.security.pki import Pki

pytestmark = [pytest.mark.puppet, pytest.mark.etcd]

ARGV_RECORDER = REPO / "tests" / "integration" / "argv_recorder.py"


def recorder_bin(tmp_path: Path) -> Path:
    """A stand-in `trigger` that records its argv and the password it got in
    its environment to tmp_path/calls.jsonl."""
    path = tmp_path / "record-call"
    path.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"with open({str(tmp_path / 'calls.jsonl')!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:],"
        " 'password': os.environ.get('ETCDCTL_PASSWORD')}) + '\\n')\n")
    path.chmod(0o755)
    return path


def exec_argvs(output: str) -> dict[str, list[str]]:
    """Trigger title -> the argv of its `trigger fire`, from `--debug` output."""
    found = {}
    for title, argv in re.findall(
            r"Exec\[trigger fire (.+?)\]\(provider=posix\): Executing '(\[.*\])'", output):
        found[title] = ast.literal_eval(argv)  # Ruby's inspect of strings: Python literals
    return found


@pytest.fixture
def watchers(tmp_path):
    """Start real `trigger watch` processes; all are killed at the end."""
    procs: list[subprocess.Popen] = []

    def start(endpoint: str, host: str, *args: str, run_cmd: str = "true",
              argv: list[str] | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(tmp_path / f"watch-{host}.log", "ab")  # noqa: SIM115 (owned by the process)
        argv = argv or [trigger_bin(), "watch", "--host", host, "--queue", "inline",
                        "--run-cmd", run_cmd, "--member-ttl", "2", "--endpoints", endpoint, *args]
        proc = subprocess.Popen(argv, env=env or clean_env(), stdout=log, stderr=log,
                                start_new_session=True)
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def member_roles(endpoint: str, host: str) -> list[str] | None:
    value = etcd_dump(endpoint, f"{PREFIX}/members/{host}")[1].get(f"{PREFIX}/members/{host}")
    return json.loads(value)["roles"] if value else None


def run_records(endpoint: str, host: str) -> list[dict]:
    """The host's run records, active and finished (trigger.results.list_runs's two places)."""
    kvs = {**etcd_dump(endpoint, f"{PREFIX}/hosts/{host}/runs/")[1], **etcd_dump(endpoint, f"{PREFIX}/done/{host}/")[1]}
    return [json.loads(v) for v in kvs.values()]


# -- the trigger type ------------------------------------------------------------


def test_serial_and_max_concurrent_reach_the_command_and_the_fire(tmp_path, etcd_server):
    apply = Apply(tmp_path / "puppet", {"trigger::globals::endpoints": etcd_server.endpoint},
                  debug=True)
    manifest = (
        "trigger { 'rolling lb': hosts => ['lb01.test', 'lb02.test'], serial => true }\n"
        "trigger { 'web batch': hosts => ['web01.test'], max_concurrent => 3 }\n"
        + exec_notifying("rolling lb", tmp_path / "a") + exec_notifying("web batch", tmp_path / "b")
    )
    result = apply(manifest)
    assert result.returncode == 2, result.output
    argvs = exec_argvs(result.output)
    assert "--serial" in argvs["rolling lb"] and "--max-concurrent" not in argvs["rolling lb"]
    batch = argvs["web batch"]
    assert batch[batch.index("--max-concurrent") + 1] == "3" and "--serial" not in batch
    assert batch[-2:] == ["--", "web batch"]

    inboxes = inbox_entries(etcd_dump(etcd_server.endpoint)[1])
    assert [e["max_concurrent"] for e in inboxes["lb01.test"]] == [1]
    assert [e["max_concurrent"] for e in inboxes["lb02.test"]] == [1]
    assert [e["max_concurrent"] for e in inboxes["web01.test"]] == [3]


def test_role_target_reaches_the_live_member_and_wait_reports_its_result(
        tmp_path, etcd_server, watchers):
    """`hosts => ['role:loadbalancer']` fires at the watcher that has the role
    (and at no other); with `wait => true` the Puppet run waits for that
    host's run, logs its result and fails when it failed."""
    endpoint = etcd_server.endpoint
    watchers(endpoint, "lb01.test", "--roles", "loadbalancer")
    watchers(endpoint, "web01.test", "--roles", "web")
    watchers(endpoint, "lb02.test", "--roles", "loadbalancer-broken", run_cmd="false")
    for host in ("lb01.test", "web01.test", "lb02.test"):
        eventually(lambda h=host: member_roles(endpoint, h), what=f"{host} registered")

    apply = Apply(tmp_path / "puppet", {"trigger::globals::endpoints": endpoint})
    ok = apply("trigger { 'refresh lb': hosts => ['role:loadbalancer'], wait => true,\n"
               "  wait_timeout => 20 }\n" + exec_notifying("refresh lb", tmp_path / "a"))
    assert ok.returncode == 2, ok.output
    (fire,) = [json.loads(v) for v in etcd_dump(endpoint, f"{PREFIX}/fires/")[1].values()]
    assert fire["hosts"] == ["lb01.test"] and fire["trigger"] == "refresh lb"
    (run,) = run_records(endpoint, "lb01.test")
    assert fire["id"] in run["served"] and run["exit_code"] == 0
    assert run_records(endpoint, "web01.test") == []
    row = [line for line in ok.output.splitlines() if "lb01.test" in line and "ok" in line]
    assert row, ok.output  # the results table is in the Puppet log

    failed = apply("trigger { 'refresh broken': hosts => ['role:loadbalancer-broken'],\n"
                   "  wait => true, wait_timeout => 20 }\n"
                   + exec_notifying("refresh broken", tmp_path / "b"))
    assert failed.returncode in (4, 6), failed.output  # failures
    assert "Exec[trigger fire refresh broken]" in failed.output
    assert "returned 4 instead of one of [0]" in failed.output
    assert [line for line in failed.output.splitlines() if "lb02.test" in line and "failed" in line]
    assert not BACKTRACE.search(failed.output), failed.output


def test_exec_provider_runs_the_command_once_per_host_as_argv(tmp_path, etcd_server):
    log = tmp_path / "argv.jsonl"
    apply = Apply(tmp_path / "puppet")
    exec_cmd = f"{sys.executable} {ARGV_RECORDER} puppet runonce -I {{host}} --note 'a b;c'"
    result = apply(
        "trigger { 'via mco': hosts => ['lb01.test', 'lb02.test'], provider => 'exec',\n"
        f"  exec_cmd => \"{exec_cmd}\" }}\n" + exec_notifying("via mco", tmp_path / "a"),
        clean_env(ARGV_LOG=str(log)))
    assert result.returncode == 2, result.output
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["argv"] for c in calls] == [
        ["puppet", "runonce", "-I", "lb01.test", "--note", "a b;c"],
        ["puppet", "runonce", "-I", "lb02.test", "--note", "a b;c"],
    ]
    assert {c["hop"] for c in calls} == {"1"}


# -- elections -------------------------------------------------------------------


def test_election_from_puppet_is_read_back_by_the_function_and_the_fact(
        tmp_path, etcd_server, watchers):
    """trigger::election drops a file the watcher reads (no restart);
    trigger::leader and the trigger_leaders fact name the holder."""
    endpoint, config_dir = etcd_server.endpoint, tmp_path / "etc-trigger"
    (config_dir / "elections").mkdir(parents=True)
    (config_dir / "elections" / "stale").write_text("")  # not in the catalog: purged
    apply = Apply(tmp_path / "puppet", {"trigger::globals::endpoints": endpoint,
                                        "trigger::globals::config_dir": str(config_dir)})
    # The watcher class (no unit, no package here) writes client.conf for the fact.
    setup = apply("class { 'trigger::watch::etcd': host => 'db01.test', queue => 'inline',\n"
                  "  manage_package => false, manage_unit => false, manage_service => false }\n"
                  "trigger::election { 'db master': }\n"
                  "trigger::role { 'database': }\n")
    assert setup.returncode == 2, setup.output
    assert sorted(p.name for p in (config_dir / "elections").iterdir()) == ["db master"]
    assert sorted(p.name for p in (config_dir / "roles").iterdir()) == ["database"]

    watchers(endpoint, "db01.test", "--config-dir", str(config_dir))
    eventually(lambda: member_roles(endpoint, "db01.test") == ["database"], what="role registered")
    holder = subprocess.run([trigger_bin(), "leader", "db master", "--endpoints", endpoint],
                            check=False, capture_output=True, text=True, env=clean_env(), timeout=30)
    assert holder.stdout.strip() == "db01.test", holder.stderr

    read = apply(
        "notify { \"db master is ${trigger::leader('db master')}\": }\n"
        "notify { \"nobody holds: ${trigger::leader('no such election') =~ Undef}\": }\n"
        "notify { \"fact: ${facts['trigger_leaders']['db master']}\": }\n",
        clean_env(TRIGGER_CONFIG_DIR=str(config_dir)))
    assert read.returncode == 2, read.output
    assert "Notice: db master is db01.test" in read.output
    assert "Notice: nobody holds: true" in read.output
    assert "Notice: fact: db01.test" in read.output


def test_leader_function_fails_loudly_when_etcd_is_unreachable(tmp_path):
    apply = Apply(tmp_path / "puppet")
    result = apply("notify { \"${trigger::leader('db master', 'http://127.0.0.1:9')}\": }\n")
    assert result.returncode == 1, result.output
    assert "trigger::leader('db master'): trigger: error:" in result.output
    assert "127.0.0.1:9" in result.output
    assert not BACKTRACE.search(result.output), result.output


# -- TLS and the etcd user ---------------------------------------------------------


def test_tls_and_user_reach_the_commands_and_the_password_stays_off_command_lines(tmp_path):
    """TLS files and the user name go on the command line; the password goes
    only into the command's environment (ETCDCTL_PASSWORD): not into argv,
    the Puppet log, or the world-readable unit."""
    unit, config_dir = tmp_path / "trigger-watch.service", tmp_path / "etc-trigger"
    recorder = recorder_bin(tmp_path)
    apply = Apply(tmp_path / "puppet", {
        "trigger::globals::endpoints": "https://etcd1.test:2379",
        "trigger::globals::config_dir": str(config_dir),
        "trigger::globals::cacert": "/etc/trigger/tls/ca.pem",
        "trigger::globals::cert": "/etc/trigger/tls/node.pem",
        "trigger::globals::key": "/etc/trigger/tls/node.key",
        "trigger::globals::trigger_bin": str(recorder),
    })
    result = apply(
        "trigger { 'plain': hosts => ['lb01.test'], user => 'lb-firer' }\n"
        "trigger { 'secret': hosts => ['lb01.test'], user => Sensitive('lb-firer:s3cret pw') }\n"
        + exec_notifying("plain", tmp_path / "a") + exec_notifying("secret", tmp_path / "b")
        + "class { 'trigger::watch::etcd': host => 'lb01.test', manage_package => false,\n"
        f"  manage_unit => true, manage_service => false, unit_file => '{unit}',\n"
        "  user => Sensitive('lb01:s3cret pw') }\n"
        "notify { \"leader: ${trigger::leader('db master', undef,\n"
        "  { 'user' => Sensitive('reader:r3ader pw') }) =~ Undef}\": }\n")
    assert result.returncode == 2, result.output
    assert "s3cret" not in result.output and "r3ader" not in result.output
    assert "[output redacted]" not in result.output  # the fire's output (a --wait table) stays
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    by_name = {c["argv"][-1]: c for c in calls}
    tls = ["--endpoints", "https://etcd1.test:2379", "--cacert", "/etc/trigger/tls/ca.pem",
           "--cert", "/etc/trigger/tls/node.pem", "--key", "/etc/trigger/tls/node.key"]
    assert by_name["plain"]["argv"][-len(tls) - 4:] == [*tls, "--user", "lb-firer", "--", "plain"]
    assert by_name["plain"]["password"] is None
    assert by_name["secret"]["argv"][-len(tls) - 4:] == [*tls, "--user", "lb-firer", "--", "secret"]
    assert by_name["secret"]["password"] == "s3cret pw"
    leader = by_name["db master"]
    assert leader["argv"] == ["leader", "--prefix", PREFIX, *tls, "--user", "reader", "--", "db master"]
    assert leader["password"] == "r3ader pw"
    assert not any("s3cret" in " ".join(c["argv"]) or "r3ader" in " ".join(c["argv"]) for c in calls)

    text = unit.read_text()
    (exec_start,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert exec_start.endswith(" ".join(f'"{w}"' for w in [*tls, "--user", "lb01"]))
    assert "s3cret" not in text
    assert f"EnvironmentFile={config_dir}/watch.env" in text
    env_file, client = config_dir / "watch.env", config_dir / "client.conf"
    assert "\nETCDCTL_PASSWORD='s3cret pw'\n" in env_file.read_text()
    assert "cacert=/etc/trigger/tls/ca.pem\n" in client.read_text()
    assert "user=lb01\npassword=s3cret pw\n" in client.read_text()
    for secret_file in (env_file, client):
        assert oct(secret_file.stat().st_mode & 0o777) == "0o600"


def unit_command(unit: Path) -> tuple[list[str], dict[str, str]]:
    """The argv of a rendered unit's ExecStart and the environment its
    EnvironmentFile adds, undoing systemd's quoting the way systemd does for
    the simple forms the module writes."""
    text = unit.read_text()
    (exec_start,) = [line[len("ExecStart="):] for line in text.splitlines()
                     if line.startswith("ExecStart=")]
    binary, rest = exec_start.split(" ", 1)
    argv = [binary] + [w.replace("%%", "%").replace("$$", "$") for w in re.findall(r'"([^"]*)"', rest)]
    env = {}
    for env_file in re.findall(r"^EnvironmentFile=(.+)$", text, re.MULTILINE):
        env.update(re.findall(r"^([A-Z_]+)='([^']*)'$", Path(env_file).read_text(), re.MULTILINE))
    return argv, env


def test_over_tls_a_trigger_waits_for_a_watcher_and_reads_the_leader(tmp_path, watchers):
    """etcd on https with client certificates: the fire, the wait and
    trigger::leader all go through TLS with the files from trigger::globals."""
    need("openssl", "openssl")
    need("etcd", "etcd-server")
    pki = Pki(tmp_path / "pki")
    ca = pki.ca("test-ca")
    server, client = pki.issue(ca, "etcd", server=True), pki.issue(ca, "root")
    etcd = EtcdServer(tmp_path / "etcd", tls=ServerTls(ca.cert, server.cert, server.key,
                                                        client.cert, client.key)).start()
    try:
        tls = ["--cacert", str(ca.cert), "--cert", str(client.cert), "--key", str(client.key)]
        watchers(etcd.endpoint, "db01.test", "--elections", "db master", *tls)
        leader = [trigger_bin(), "leader", "db master", "--endpoints", etcd.endpoint, *tls]
        eventually(lambda: subprocess.run(leader, check=False, capture_output=True, text=True,
                                          env=clean_env(), timeout=30).returncode == 0,
                   what="db01.test registered over TLS")

        apply = Apply(tmp_path / "puppet", {
            "trigger::globals::endpoints": etcd.endpoint,
            "trigger::globals::cacert": str(ca.cert),
            "trigger::globals::cert": str(client.cert),
            "trigger::globals::key": str(client.key),
        })
        result = apply(
            "trigger { 'deploy': hosts => ['db01.test'], wait => true, wait_timeout => 20 }\n"
            + exec_notifying("deploy", tmp_path / "a")
            + "notify { \"db master is ${trigger::leader('db master')}\": }\n")
        assert result.returncode == 2, result.output
        assert "Notice: db master is db01.test" in result.output
        assert [line for line in result.output.splitlines() if re.search(r"db01\.test\s+ok\s", line)]

        # Without the client certificate etcd refuses: a clear failure, no backtrace.
        bare = Apply(tmp_path / "bare", {"trigger::globals::endpoints": etcd.endpoint,
                                        "trigger::globals::cacert": str(ca.cert)})
        refused = bare("notify { \"${trigger::leader('db master')}\": }\n")
        assert refused.returncode == 1, refused.output
        assert "trigger::leader('db master'): trigger: error:" in refused.output
        assert not BACKTRACE.search(refused.output), refused.output
    finally:
        etcd.close()


def test_with_etcd_auth_the_unit_watcher_and_a_fire_log_in_with_passwords_from_puppet(
        tmp_path, etcd_server, watchers):
    """etcd users set up by `trigger auth setup`; the watcher runs exactly as
    the rendered unit says (password from its environment file) and a
    trigger fires as user `ci` with the password given as Sensitive."""
    endpoint, passwords = etcd_server.endpoint, tmp_path / "passwords"
    setup = subprocess.run([trigger_bin(), "auth", "setup", "--hosts", "node1.test", "--firers", "ci",
                            "--password-dir", str(passwords), "--endpoints", endpoint],
                           check=False, capture_output=True, text=True, env=clean_env(), timeout=60)
    assert setup.returncode == 0, setup.stderr
    node_pw = (passwords / "node1.test.password").read_text().strip()
    ci_pw = (passwords / "ci.password").read_text().strip()

    unit, config_dir = tmp_path / "trigger-watch.service", tmp_path / "etc-trigger"
    apply = Apply(tmp_path / "puppet", {"trigger::globals::endpoints": endpoint,
                                        "trigger::globals::config_dir": str(config_dir)})
    rendered = apply(
        "class { 'trigger::watch::etcd': host => 'node1.test', queue => 'inline', run_cmd => 'true',\n"
        "  member_ttl => 2, manage_package => false, manage_unit => true, manage_service => false,\n"
        f"  unit_file => '{unit}', user => Sensitive('node1.test:{node_pw}') }}\n")
    assert rendered.returncode == 2, rendered.output
    argv, unit_env = unit_command(unit)
    assert node_pw not in " ".join(argv) and node_pw not in unit.read_text()
    assert unit_env == {"ETCDCTL_PASSWORD": node_pw}
    watchers(endpoint, "node1.test", argv=argv, env=clean_env(**unit_env))

    fire = ("trigger { 'deploy': hosts => ['node1.test'], wait => true, wait_timeout => 20,\n"
            f"  user => Sensitive('ci:{ci_pw}') }}\n" + exec_notifying("deploy", tmp_path / "a")
            + "trigger { 'intruder': hosts => ['node1.test'], user => Sensitive('ci:wrong') }\n"
            + exec_notifying("intruder", tmp_path / "b"))
    result = apply(fire)
    assert result.returncode == 6, result.output  # changes and a failure: the wrong password
    assert [line for line in result.output.splitlines() if re.search(r"node1\.test\s+ok\s", line)]
    assert "authentication as 'ci' failed" in result.output
    assert "Exec[trigger fire intruder]" in result.output
    assert ci_pw not in result.output and "wrong" not in " ".join(
        line for line in result.output.splitlines() if "Failed to call refresh" in line)


# -- bad parameters ----------------------------------------------------------------


@pytest.mark.parametrize(
    "manifest, message",
    [
        ("trigger { 'bad': hosts => ['lb01'], provider => 'exec', exec_cmd => 'mco puppet runonce' }",
         "Trigger['bad']: exec_cmd must name the host as {host}"),
        ("trigger { 'bad': hosts => ['lb01'], provider => 'exec' }",
         "Trigger['bad']: provider 'exec' needs exec_cmd"),
        ("trigger { 'bad': hosts => ['lb01'], max_concurrent => -1 }",
         "Trigger['bad']: max_concurrent must be from 0 (no limit) to 100000, got -1"),
        ("trigger { 'bad': hosts => ['lb01'], serial => true, max_concurrent => 3 }",
         "Trigger['bad']: serial => true means max_concurrent 1, but max_concurrent is 3"),
        ("trigger { 'bad': hosts => ['lb01'], cert => '/etc/node.pem' }",
         "Trigger['bad']: cert and key go together: cert is set, the other is not"),
        ("trigger::election { 'db/master': }",
         "Trigger::Election['db/master']: 'db/master' is not a usable election name"),
    ],
    ids=["exec-without-host", "exec-without-cmd", "negative-limit", "serial-and-limit",
         "cert-without-key", "slash-in-election"],
)
def test_bad_parameters_fail_with_a_clear_message(tmp_path, manifest, message):
    apply = Apply(tmp_path / "puppet", {"trigger::globals::config_dir": str(tmp_path / "etc")})
    result = apply(f"{manifest}\nfile {{ '{tmp_path / 'm'}': ensure => file }}\n")
    assert result.returncode == 1, result.output  # the catalog did not compile
    assert message in result.output
    assert not BACKTRACE.search(result.output), result.output
    assert not (tmp_path / "m").exists() and not (tmp_path / "etc").exists()  # nothing applied


def test_function_and_fact_are_valid_ruby():
    """The fact and the function are plain Ruby that Puppet loads lazily."""
    for path in (Path(REPO, "puppet/trigger/lib/facter/trigger_leaders.rb"),
                 Path(REPO, "puppet/trigger/lib/puppet/functions/trigger/leader.rb")):
        check = subprocess.run(["ruby", "-c", str(path)], check=False, capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stderr
