"""The Bolt task trigger::fire (puppet/trigger/tasks/fire.{json,py}).

Its metadata is validated against the Puppet task metadata schema
(data/puppet-task-metadata.schema.json, tasks/task.json of
puppetlabs/puppet-specifications) with the Ruby json-schema gem, as PDK's
validation does; each parameter's `type` is parsed by real Puppet and the
inputs used below are checked against it. The task then runs as Bolt runs
it: its parameters as one JSON object on stdin, plus Bolt's `_` metaparams,
firing into a real etcd.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.puppet.puppet_apply import (
    MODULE,
    PREFIX,
    Apply,
    clean_env,
    etcd_dump,
    inbox_entries,
    trigger_bin,
)

pytestmark = pytest.mark.puppet

TASK = MODULE / "tasks" / "fire.py"
METADATA = MODULE / "tasks" / "fire.json"
SCHEMA = Path(__file__).parent / "data" / "puppet-task-metadata.schema.json"
VALIDATE = (
    "s = JSON.parse(File.read(ARGV[0])); s.delete('$schema'); "
    "errors = JSON::Validator.fully_validate(s, JSON.parse(File.read(ARGV[1])), version: :draft6); "
    "puts errors; exit(errors.empty? ? 0 : 1)"
)


def schema_errors(metadata: Path) -> str:
    """The schema validator's complaints about `metadata`, '' when none."""
    ruby = need("ruby", "ruby")
    done = subprocess.run([ruby, "-rjson", "-rjson-schema", "-e", VALIDATE, str(SCHEMA), str(metadata)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode in (0, 1), done.stderr  # 2 and up: the validator itself failed
    return done.stdout.strip()


def test_metadata_is_valid_task_metadata(tmp_path):
    metadata = json.loads(METADATA.read_text())
    assert schema_errors(METADATA) == ""
    # The gem does not know draft-06's propertyNames: the name rule by hand.
    name_rule = json.loads(SCHEMA.read_text())["definitions"]["parameterName"]["pattern"]
    assert all(re.fullmatch(name_rule, name) for name in metadata["parameters"])
    assert metadata["input_method"] == "stdin"
    assert metadata["parameters"]["password"]["sensitive"] is True
    # The validator does reject what the schema forbids.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**metadata, "input_method": "argv", "supports_noop": "no"}))
    assert "input_method" in schema_errors(bad) and "supports_noop" in schema_errors(bad)


def test_every_parameter_type_is_a_puppet_type_that_accepts_the_inputs_used_here(tmp_path):
    """Bolt checks a task's input against these types before running it."""
    parameters = json.loads(METADATA.read_text())["parameters"]
    inputs = {
        "name": "refresh load balancers", "hosts": ["lb01.example.com", "role:loadbalancer"],
        "provider": "etcd", "exec_cmd": "mco puppet runonce -I {host}", "ttl": 5,
        "max_concurrent": 0, "serial": True, "wait": False, "timeout": 60, "ok_codes": [0, 2],
        "endpoints": ["http://127.0.0.1:2379"], "prefix": PREFIX, "cacert": "/etc/trigger/ca.pem",
        "cert": "/etc/trigger/node.pem", "key": "/etc/trigger/node.key", "user": "ci",
        "password": "secret", "trigger_bin": "/usr/local/bin/trigger", "noop": True, "tags": ["nginx", "lb"],
    }
    assert sorted(inputs) == sorted(parameters)
    # JSON scalars and arrays are Puppet literals as they are.
    checks = "".join(
        f"assert_type(Type({json.dumps(spec['type'])}), {json.dumps(inputs[name])})\n"
        for name, spec in parameters.items())
    refusals = "".join(
        f"unless {json.dumps(value)} !~ Type({json.dumps(parameters[name]['type'])}) {{ fail('{name} accepted {value}') }}\n"
        for name, value in [("hosts", "lb01"), ("hosts", []), ("ttl", 0), ("provider", "mco")])
    result = Apply(tmp_path / "puppet")(checks + refusals + "notice('types ok')\n")
    assert result.returncode == 0 and "types ok" in result.output, result.output


def run_task(params: dict, **env: str) -> tuple[int, dict]:
    """The task as Bolt runs it: JSON on stdin, Bolt's metaparams added."""
    stdin = json.dumps({**params, "_task": "trigger::fire", "_installdir": "/tmp/bolt"})
    done = subprocess.run([str(TASK)], input=stdin, capture_output=True, text=True, check=False,
                          env=clean_env(**env), timeout=120)
    return done.returncode, json.loads(done.stdout)


def test_task_fires_into_a_real_etcd_and_reports_the_event_id(tmp_path, etcd_server):
    marker = tmp_path / "pwned"
    name = f"deploy $(touch {marker}); `touch {marker}`"  # shell syntax stays text
    code, result = run_task({"name": name, "hosts": ["lb01.example.com", "lb02.example.com"],
                             "ttl": 3, "endpoints": [etcd_server.endpoint],
                             "trigger_bin": trigger_bin()})
    assert code == 0, result
    assert re.fullmatch(r"[0-9a-f]{16}-[0-9a-f]{8}", result["event_id"])
    _, kvs = etcd_dump(etcd_server.endpoint)
    inboxes = inbox_entries(kvs)
    assert sorted(inboxes) == ["lb01.example.com", "lb02.example.com"]
    for host in inboxes:
        (entry,) = inboxes[host]
        assert entry["trigger"] == name and entry["ttl"] == 3 and entry["id"] == result["event_id"]
        assert f"{PREFIX}/hosts/{host}/{result['event_id']}" in kvs
    assert not marker.exists()


def test_task_passes_the_password_in_the_environment_only(tmp_path):
    """A stand-in `trigger` records its argv and ETCDCTL_PASSWORD."""
    record = tmp_path / "record.json"
    fake = tmp_path / "trigger"
    fake.write_text("#!/usr/bin/env python3\nimport json, os, sys\n"
                    f"json.dump({{'argv': sys.argv[1:], 'password': os.environ.get('ETCDCTL_PASSWORD')}},"
                    f" open({str(record)!r}, 'w'))\nprint('0123456789abcdef-01234567')\n")
    fake.chmod(0o755)
    code, result = run_task({"name": "-x", "hosts": ["a.example.com"], "wait": True, "timeout": 30,
                             "ok_codes": [0, 1], "serial": True, "user": "ci", "password": "s3cret",
                             "noop": True, "tags": ["nginx", "lb"], "trigger_bin": str(fake)})
    assert code == 0, result
    seen = json.loads(record.read_text())
    assert seen["password"] == "s3cret" and "s3cret" not in json.dumps(seen["argv"])
    assert seen["argv"] == ["fire", "--hosts", "a.example.com", "--serial", "--wait", "--timeout", "30",
                            "--ok-codes", "0,1", "--user", "ci", "--noop", "--tags", "nginx,lb", "--", "-x"]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"name": "x", "hosts": "lb01.example.com"}, "parameter 'hosts' must be a non-empty array of host names"),
        ({"name": "", "hosts": ["lb01.example.com"]}, "parameter 'name' must be a non-empty string"),
        ({"name": "x", "hosts": ["lb01"], "hots": 1}, "unknown parameter(s): hots"),
        ({"name": "x", "hosts": ["lb01"], "wait": "yes"}, "parameter 'wait' must be true or false"),
    ],
    ids=["hosts-string", "empty-name", "unknown", "wait-string"],
)
def test_bad_input_is_a_bolt_error_and_writes_nothing(etcd_server, params, message):
    before, _ = etcd_dump(etcd_server.endpoint)
    code, result = run_task({**params, "endpoints": [etcd_server.endpoint], "trigger_bin": trigger_bin()})
    assert code == 1
    assert result["_error"]["kind"] == "trigger/bad-parameters"
    assert result["_error"]["msg"] == f"trigger::fire: {message}"
    assert etcd_dump(etcd_server.endpoint)[0] == before


def test_a_failed_fire_is_a_bolt_error_with_the_commands_message():
    code, result = run_task({"name": "x", "hosts": ["lb01.example.com"],
                             "endpoints": ["http://127.0.0.1:9"], "trigger_bin": trigger_bin()})
    assert code == 1
    error = result["_error"]
    assert error["kind"] == "trigger/fire-failed" and error["details"]["exit_code"] == 1
    assert error["msg"].startswith("trigger: error:") and "127.0.0.1:9" in error["msg"]
