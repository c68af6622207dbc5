"""The Puppet module puppet/trigger, applied with real Puppet (Debian `puppet`).

Each `puppet apply` gets its own vardir/confdir/codedir under tmp_path, so
nothing touches /etc/puppet or /var/cache/puppet and tests do not share
state. The module finds the `trigger` command through Hiera
(`trigger::globals::trigger_bin`), the way a site would point it at its
virtualenv; the seed's example manifest is applied as shipped.

What is checked against a real etcd is the store itself (`etcdctl get -w
json`): the keys written and the store revision, so "fires nothing" means no
write at all.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import need
from tests.etcd_server import free_port
from tests.integration.puppet.puppet_apply import (
    BACKTRACE,
    EXAMPLES,
    LB_HOSTS,
    MODULE,
    PREFIX,
    REPO,
    Apply,
    clean_env,
    etcd_dump,
    exec_notifying,
    inbox_entries,
    trigger_bin,
)

pytestmark = pytest.mark.puppet

# -- firing ----------------------------------------------------------------------


def test_seed_example_fires_once_per_host_and_second_apply_changes_nothing(tmp_path, etcd_server):
    example = (EXAMPLES / "etcd-test.pp").read_text()
    # The seed's declaration, metaparameter `tag` included, as shipped.
    assert "trigger { 'refresh load balancers':" in example
    assert "tag      => ['staging', 'lb', 'puppetlabs.com']" in example
    assert "notify  => Trigger['refresh load balancers']" in example
    # Only the marker file moves into this test's directory.
    marker = tmp_path / "foo"
    manifest = example.replace("/tmp/foo", str(marker))
    assert f"exec {{ '/usr/bin/touch {marker}':" in manifest
    assert f"creates => '{marker}'," in manifest

    apply = Apply(tmp_path / "puppet", {"trigger::globals::endpoints": [etcd_server.endpoint]})
    first = apply(manifest)
    assert first.returncode == 2, first.output  # changes, no failures

    revision, kvs = etcd_dump(etcd_server.endpoint)
    inboxes = inbox_entries(kvs)
    assert sorted(inboxes) == LB_HOSTS, kvs.keys()
    assert all(len(entries) == 1 for entries in inboxes.values()), inboxes
    (a,), (b,) = inboxes.values()
    assert a == b  # one fire: the same entry in every inbox
    assert a["trigger"] == "refresh load balancers"
    assert a["hop"] == 1 and a["ttl"] == 5
    assert a["id"] in first.output  # the fire's output is logged
    assert "Trigger[refresh load balancers]/Exec[trigger fire refresh load balancers]" in first.output

    second = apply(manifest)
    assert second.returncode == 0, second.output  # no changes, no failures
    assert "trigger fire" not in second.output
    assert etcd_dump(etcd_server.endpoint) == (revision, kvs)  # not a single write


def test_more_hosts_than_one_command_line_argument_holds(tmp_path, etcd_server):
    # 6,000 FQDNs joined are 164 KiB: as one --hosts the kernel refuses the
    # exec (E2BIG, 128 KiB per argument), so the module passes several.
    hosts = [f"web{i:05d}.rack{i % 40:02d}.example.com" for i in range(6000)]
    assert len(",".join(hosts)) > 131072
    apply = Apply(tmp_path / "puppet", {"trigger::globals::endpoints": etcd_server.endpoint})
    result = apply(f"trigger {{ 'everyone': hosts => {json.dumps(hosts)} }}\n"
                   + exec_notifying("everyone", tmp_path / "foo"))
    assert result.returncode == 2, result.output[-2000:]
    inboxes = inbox_entries(etcd_dump(etcd_server.endpoint, f"{PREFIX}/hosts/")[1])
    assert sorted(inboxes) == sorted(hosts)
    assert len({entry["id"] for entries in inboxes.values() for entry in entries}) == 1  # one fire


def test_noop_and_tags_travel_with_the_fire(tmp_path, etcd_server):
    apply = Apply(tmp_path / "puppet", {"trigger::globals::endpoints": etcd_server.endpoint})
    result = apply("trigger { 'try': hosts => ['lb01.example.com'], run_noop => true, tags => ['nginx', 'Lb'] }\n"
                   + exec_notifying("try", tmp_path / "foo"))
    assert result.returncode == 2, result.output[-2000:]
    (entry,) = inbox_entries(etcd_dump(etcd_server.endpoint, f"{PREFIX}/hosts/")[1])["lb01.example.com"]
    assert (entry["noop"], entry["tags"]) == (True, ["lb", "nginx"])


def test_declaring_a_trigger_without_notifying_it_fires_nothing(tmp_path, etcd_server):
    revision, _ = etcd_dump(etcd_server.endpoint)
    apply = Apply(tmp_path / "puppet", {"trigger::globals::endpoints": etcd_server.endpoint})
    result = apply("trigger { 'idle': hosts => ['lb01.example.com'], provider => 'etcd' }\n"
                   f"file {{ '{tmp_path / 'unrelated'}': content => 'x' }}\n")
    assert result.returncode == 2, result.output  # the file changed...
    assert "trigger fire" not in result.output
    assert etcd_dump(etcd_server.endpoint)[0] == revision  # ...and nothing was fired


def test_dummy_provider_writes_nothing(tmp_path, etcd_server):
    revision, _ = etcd_dump(etcd_server.endpoint)
    apply = Apply(tmp_path / "puppet")
    manifest = (
        "trigger { 'refresh load balancers':\n"
        "  hosts    => ['lb01.example.com', 'lb02.example.com'],\n"
        "  provider => 'dummy',\n}\n"
        + exec_notifying("refresh load balancers", tmp_path / "foo")
    )
    result = apply(manifest, clean_env(ETCDCTL_ENDPOINTS=etcd_server.endpoint))
    assert result.returncode == 2, result.output
    assert "dummy provider" in result.output and "wrote nothing" in result.output
    assert etcd_dump(etcd_server.endpoint)[0] == revision


def test_hop_count_reaches_the_fire_and_the_loop_stops_at_ttl(tmp_path, etcd_server):
    """A Puppet run started by a trigger has TRIGGER_HOP/TRIGGER_CHAIN in its
    environment (set by `trigger run`); a trigger it notifies carries hop + 1,
    and the fire that would exceed the ttl fails the resource."""
    apply = Apply(tmp_path / "puppet")
    trigger = ("trigger { 'bounce': hosts => ['web01.example.com'], ttl => 3,\n"
               f"  endpoints => '{etcd_server.endpoint}' }}\n")
    # A run on lb01 serving an entry that app01 fired and web01 passed on.
    carried = apply(trigger + exec_notifying("bounce", tmp_path / "hop2"),
                    clean_env(TRIGGER_HOP="2", TRIGGER_CHAIN="app01.example.com,web01.example.com",
                              TRIGGER_HOST="lb01.example.com"))
    assert carried.returncode == 2, carried.output
    (entry,) = inbox_entries(etcd_dump(etcd_server.endpoint)[1])["web01.example.com"]
    assert entry["hop"] == 3 and entry["ttl"] == 3
    assert entry["chain"] == ["app01.example.com", "web01.example.com", "lb01.example.com"]

    # The run on web01 that this entry starts notifies the trigger again.
    refused = apply(trigger + exec_notifying("bounce", tmp_path / "hop3"),
                    clean_env(TRIGGER_HOP=str(entry["hop"]), TRIGGER_CHAIN=",".join(entry["chain"]),
                              TRIGGER_HOST="web01.example.com"))
    assert refused.returncode in (4, 6), refused.output  # failures
    assert "Exec[trigger fire bounce]" in refused.output
    assert "loop refused: trigger 'bounce' would be hop 4 > ttl 3" in refused.output
    assert ("app01.example.com -> web01.example.com -> lb01.example.com -> web01.example.com"
            in refused.output)
    assert not BACKTRACE.search(refused.output), refused.output
    _, kvs = etcd_dump(etcd_server.endpoint)
    assert len(inbox_entries(kvs)["web01.example.com"]) == 1  # no second entry
    assert [k for k in kvs if k.startswith(f"{PREFIX}/refused/")], kvs.keys()  # recorded


# -- validation ------------------------------------------------------------------


def test_module_passes_parser_validate_and_puppet_lint(tmp_path):
    need("puppet", "puppet")
    lint = need("puppet-lint", "puppet-lint")
    manifests = sorted(str(p) for p in MODULE.rglob("*.pp"))
    assert any(p.endswith("examples/etcd-test.pp") for p in manifests)
    home = [f"--{d}dir={tmp_path / d}" for d in ("var", "conf", "code")]
    validate = subprocess.run(["puppet", "parser", "validate", *home, *manifests],
                              check=False, capture_output=True, text=True, timeout=60)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    templates = sorted(str(p) for p in (MODULE / "templates").glob("*.epp"))
    assert templates
    epp = subprocess.run(["puppet", "epp", "validate", *home, *templates],
                         check=False, capture_output=True, text=True, timeout=60)
    assert epp.returncode == 0, epp.stdout + epp.stderr
    result = subprocess.run([lint, "--fail-on-warnings", str(MODULE)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    metadata = json.loads((MODULE / "metadata.json").read_text())
    assert metadata["name"].endswith("-trigger") and metadata["version"]


@pytest.mark.parametrize(
    "params, message",
    [
        ("hosts => ['lb01.example.com', '']",
         "Trigger['bad']: hosts entry 1 is empty"),
        ("hosts => ['lb01.example.com; reboot']",
         "Trigger['bad']: hosts entry 0 ('lb01.example.com; reboot') is not a host name"),
        ("hosts => ['lb01.example.com'], ttl => 'five'",
         "Trigger[bad]: parameter 'ttl' expects an Integer value, got String"),
        ("hosts => ['lb01.example.com'], provider => 'mcollective'",
         "Trigger[bad]: parameter 'provider' expects a match for Trigger::Provider"),
    ],
    ids=["empty-host", "shell-in-host", "ttl-not-integer", "unknown-provider"],
)
def test_bad_parameters_fail_with_a_clear_message(tmp_path, params, message):
    apply = Apply(tmp_path / "puppet")
    result = apply(f"trigger {{ 'bad': {params} }}\n" + exec_notifying("bad", tmp_path / "m"))
    assert result.returncode == 1, result.output  # the catalog did not compile
    assert message in result.output
    assert not BACKTRACE.search(result.output), result.output
    assert not (tmp_path / "m").exists()  # nothing was applied


# -- the watcher and etcd classes --------------------------------------------------


def test_watch_class_renders_a_unit_running_trigger_watch(tmp_path):
    need("tsp", "task-spooler")  # the class ensures the package; it is already there
    unit = tmp_path / "trigger-watch.service"
    run_cmd = "puppet apply '/srv/site.pp' --tags ${role}_100%"
    puppet_quoted = run_cmd.replace("'", "\\'")
    config_dir = tmp_path / "etc-trigger"  # not /etc/trigger of the machine running the tests
    apply = Apply(tmp_path / "puppet", {"trigger::globals::endpoints": ["http://10.0.0.1:2379",
                                                                        "http://10.0.0.2:2379"],
                                        "trigger::globals::config_dir": str(config_dir)})
    manifest = (
        "class { 'trigger::watch::etcd':\n"
        f"  run_cmd          => '{puppet_quoted}',\n"
        "  host             => 'web01.example.com',\n"
        "  ts_socket        => '/run/trigger/tsp.socket',\n"
        "  manage_unit      => true,\n"
        "  manage_service   => false,\n"
        f"  unit_file        => '{unit}',\n}}\n"
    )
    result = apply(manifest)
    assert result.returncode == 2, result.output
    assert "Service[" not in result.output and "daemon-reload" not in result.output

    text = unit.read_text()
    (exec_start,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    bin_path = trigger_bin()
    assert exec_start == (
        f'ExecStart={bin_path} "watch" "--host" "web01.example.com" '
        f'"--run-cmd" "puppet apply \'/srv/site.pp\' --tags $${{role}}_100%%" '
        f'"--queue" "tsp" "--prefix" "{PREFIX}" "--config-dir" "{config_dir}" '
        '"--endpoints" "http://10.0.0.1:2379,http://10.0.0.2:2379"'
    )
    assert sorted(p.name for p in config_dir.iterdir()) == ["client.conf", "elections", "roles"]
    assert "EnvironmentFile" not in text  # no etcd user: no environment file
    assert 'Environment="TS_SOCKET=/run/trigger/tsp.socket"' in text
    assert "Restart=always" in text and "WantedBy=multi-user.target" in text
    if shutil.which("systemd-analyze"):  # systemd's own parser, offline
        verify = subprocess.run(["systemd-analyze", "verify", str(unit)],
                                check=False, capture_output=True, text=True, timeout=30)
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr

    # Undo systemd's quoting and specifiers: the words the CLI gets are the
    # ones the class meant, and the CLI accepts them.
    words = [w.replace("%%", "%").replace("$$", "$")
             for w in re.findall(r'"([^"]*)"', exec_start)]
    sys.path.insert(0, str(REPO))
    from trigger.cli import build_parser

    args = build_parser().parse_args(words)
    assert args.run_cmd == run_cmd and args.host == "web01.example.com"
    assert args.queue == "tsp" and args.endpoints == "http://10.0.0.1:2379,http://10.0.0.2:2379"

    again = apply(manifest)
    assert again.returncode == 0, again.output  # idempotent


def test_install_etcd_config_starts_a_real_etcd(tmp_path):
    """The rendered /etc/default/etcd, given to etcd as its environment (as
    the Debian unit does), starts a healthy single-member etcd."""
    etcd = need("etcd", "etcd-server")
    client, peer = free_port(), free_port()
    config, data_dir = tmp_path / "etcd.default", tmp_path / "data"
    apply = Apply(tmp_path / "puppet")
    result = apply(
        "class { 'trigger::install::etcd':\n"
        "  member_name    => 'node1',\n"
        f"  peer_url       => 'http://127.0.0.1:{peer}',\n"
        f"  client_urls    => ['http://127.0.0.1:{client}'],\n"
        f"  data_dir       => '{data_dir}',\n"
        f"  config_file    => '{config}',\n"
        "  user           => 'root',\n"
        "  manage_package => false,\n"
        "  manage_service => false,\n}\n"
    )
    assert result.returncode == 2, result.output
    env = dict(re.findall(r'^(ETCD_[A-Z_]+)="([^"]*)"$', config.read_text(), re.MULTILINE))
    assert env["ETCD_INITIAL_CLUSTER"] == f"node1=http://127.0.0.1:{peer}"
    assert env["ETCD_DATA_DIR"] == str(data_dir)
    assert "discovery" not in config.read_text().lower()
    assert oct(data_dir.stat().st_mode & 0o777) == "0o700"

    log = open(tmp_path / "etcd.log", "wb")  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen([etcd, "--log-level", "error"], env={**clean_env(), **env},
                            stdout=log, stderr=log, start_new_session=True)
    try:
        deadline, healthy = time.monotonic() + 20, False
        while time.monotonic() < deadline and not healthy and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=1) as r:
                    healthy = b'"true"' in r.read()
            except OSError:
                time.sleep(0.05)
        assert healthy, (tmp_path / "etcd.log").read_text()
    finally:
        proc.kill()
        proc.wait()
        log.close()


def test_install_etcd_static_peers_and_a_member_outside_them(tmp_path):
    apply = Apply(tmp_path / "puppet")
    params = (
        "  peers          => { 'etcd2' => 'http://10.0.0.12:2380', 'etcd1' => 'http://10.0.0.11:2380' },\n"
        f"  data_dir       => '{tmp_path / 'data'}',\n"
        f"  config_file    => '{tmp_path / 'etcd.default'}',\n"
        "  user           => 'root',\n"
        "  manage_package => false,\n"
        "  manage_service => false,\n"
    )
    outsider = apply("class { 'trigger::install::etcd':\n  member_name => 'etcd9',\n" + params + "}\n")
    assert outsider.returncode == 1, outsider.output
    assert "member_name 'etcd9' is not one of the peers (etcd1, etcd2)" in outsider.output
    assert not BACKTRACE.search(outsider.output)

    member = apply("class { 'trigger::install::etcd':\n  member_name => 'etcd2',\n" + params + "}\n")
    assert member.returncode == 2, member.output
    text = (tmp_path / "etcd.default").read_text()
    assert 'ETCD_NAME="etcd2"' in text
    assert 'ETCD_INITIAL_CLUSTER="etcd1=http://10.0.0.11:2380,etcd2=http://10.0.0.12:2380"' in text
    assert 'ETCD_INITIAL_ADVERTISE_PEER_URLS="http://10.0.0.12:2380"' in text
    assert 'ETCD_ADVERTISE_CLIENT_URLS="http://10.0.0.12:2379"' in text
    assert 'ETCD_LISTEN_CLIENT_URLS="http://10.0.0.12:2379,http://127.0.0.1:2379"' in text


def test_watch_class_passes_metrics_port_and_log_format_to_the_watcher(tmp_path):
    """Both reach the unit's command line as options; unset, neither does
    (the exact ExecStart of the test above)."""
    need("tsp", "task-spooler")
    unit = tmp_path / "trigger-watch.service"
    apply = Apply(tmp_path / "puppet", {"trigger::globals::config_dir": str(tmp_path / "etc")})
    manifest = (
        "class { 'trigger::watch::etcd':\n"
        "  host           => 'web01.example.com',\n"
        "  metrics_port   => 9464,\n"
        "  log_format     => 'json',\n"
        "  run_options    => ['noop'],\n"
        "  manage_unit    => true,\n"
        "  manage_service => false,\n"
        f"  unit_file      => '{unit}',\n}}\n"
    )
    result = apply(manifest)
    assert result.returncode == 2, result.output
    (exec_start,) = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    words = re.findall(r'"([^"]*)"', exec_start)
    at = words.index("--metrics-port")
    assert words[at:at + 2] == ["--metrics-port", "9464"]
    at = words.index("--log-format")
    assert words[at:at + 2] == ["--log-format", "json"]
    at = words.index("--run-options")
    assert words[at:at + 2] == ["--run-options", "noop"]

    bad = apply(manifest.replace("'json'", "'xml'"))
    assert bad.returncode == 1, bad.output
    assert "parameter 'log_format' expects" in bad.output
    off = apply(manifest.replace("9464", "0"))
    assert off.returncode == 1 and "parameter 'metrics_port' expects" in off.output, off.output
