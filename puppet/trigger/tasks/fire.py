#!/usr/bin/env python3
"""Bolt task trigger::fire: `trigger fire` on the target, from the task's
JSON parameters on standard input (input_method stdin).

The command is an argument list: no parameter ever reaches a shell. The
result is one JSON object on stdout: the event id and the command's output;
on failure Bolt's `_error` object, and exit 1.
"""

import json
import os
import re
import subprocess
import sys

DEFAULT_BIN = "/usr/local/bin/trigger"
# The kernel refuses one argument over 128 KiB: long host lists take several --hosts.
HOSTS_PER_OPTION = 400
# Parameter -> the option it becomes; `None` for those handled apart.
OPTIONS = {
    "name": None, "hosts": None, "password": None, "trigger_bin": None,
    "provider": "--provider", "exec_cmd": "--exec-cmd", "ttl": "--ttl",
    "max_concurrent": "--max-concurrent", "serial": "--serial", "wait": "--wait",
    "timeout": "--timeout", "ok_codes": "--ok-codes", "endpoints": "--endpoints",
    "prefix": "--prefix", "cacert": "--cacert", "cert": "--cert", "key": "--key",
    "user": "--user", "noop": "--noop", "tags": "--tags",
}
FLAGS = {"serial", "wait", "noop"}
# How `trigger fire` prints the id of the fire it wrote (the etcd provider).
EVENT_ID = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{8}$", re.MULTILINE)
LISTS = {"ok_codes", "endpoints", "tags"}


class TaskError(Exception):
    """Bad parameters: reported as Bolt's `_error`, nothing run."""


def command(params: dict) -> tuple[list[str], dict[str, str]]:
    """The argv of `trigger fire` and the environment it needs added."""
    unknown = sorted(k for k in params if k not in OPTIONS and not k.startswith("_"))
    if unknown:
        raise TaskError(f"unknown parameter(s): {', '.join(unknown)}")
    name, hosts = params.get("name"), params.get("hosts")
    if not isinstance(name, str) or not name:
        raise TaskError("parameter 'name' must be a non-empty string")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise TaskError("parameter 'hosts' must be a non-empty array of host names")
    argv = [params.get("trigger_bin") or DEFAULT_BIN, "fire"]
    for start in range(0, len(hosts), HOSTS_PER_OPTION):
        argv += ["--hosts", ",".join(hosts[start:start + HOSTS_PER_OPTION])]
    for key, option in OPTIONS.items():
        value = params.get(key)
        if option is None or value is None:
            continue
        if key in FLAGS:
            if not isinstance(value, bool):
                raise TaskError(f"parameter '{key}' must be true or false")
            argv += [option] if value else []
        elif key in LISTS:
            if not isinstance(value, list) or not value:
                raise TaskError(f"parameter '{key}' must be a non-empty array")
            argv += [option, ",".join(str(v) for v in value)]
        else:
            argv += [option, str(value)]
    # `--` ends the options: a name starting with '-' is still the name.
    argv += ["--", name]
    env = {"ETCDCTL_PASSWORD": params["password"]} if params.get("password") else {}
    return argv, env


def main() -> int:
    try:
        params = json.load(sys.stdin)
        if not isinstance(params, dict):
            raise TaskError("the parameters must be a JSON object")
        argv, env = command(params)
    except (ValueError, TaskError) as exc:
        return report_error("trigger/bad-parameters", f"trigger::fire: {exc}", {})
    try:
        done = subprocess.run(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False)
    except OSError as exc:
        return report_error("trigger/no-command", f"trigger::fire: cannot run {argv[0]}: {exc.strerror}",
                            {"command": argv[0]})
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip()).splitlines() or [f"exit {done.returncode}"]
        return report_error("trigger/fire-failed", message[-1],
                            {"exit_code": done.returncode, "stdout": done.stdout, "stderr": done.stderr})
    # The etcd provider prints the fire's id (then, with --wait, the results).
    found = EVENT_ID.search(done.stdout)
    print(json.dumps({"event_id": found.group(0) if found else None, "exit_code": 0,
                      "stdout": done.stdout, "stderr": done.stderr}))
    return 0


def report_error(kind: str, msg: str, details: dict) -> int:
    print(json.dumps({"_error": {"kind": kind, "msg": msg, "details": details}}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
