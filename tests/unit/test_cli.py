"""The command line's own checks, in process, on the in-memory store."""

import argparse
import json

import pytest

from trigger.cli import main
from trigger.records import BadRecord


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_every_hosts_and_hosts_file_count(tmp_path, capsys):
    f = tmp_path / "hosts"
    f.write_text("# load balancers\nlb1.example.com\n\nlb2.example.com,lb3.example.com\n")
    code, out, err = run(capsys, "fire", "t", "--hosts", "a.example.com", "--hosts-file", str(f),
                         "--hosts", "b.example.com", "--store", "memory", "--provider", "dummy")
    assert code == 0, err
    assert out.split() == ["a.example.com", "b.example.com", "lb1.example.com", "lb2.example.com",
                           "lb3.example.com"]
    assert "dummy provider: would fire 't' at 5 host(s)" in err and "wrote nothing" in err


def test_hosts_from_standard_input(monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("x1\nx2\n"))
    code, out, _ = run(capsys, "fire", "t", "--hosts-file", "-", "--store", "memory")
    assert code == 0 and len(out.strip()) > 10  # the event id


@pytest.mark.parametrize("argv, message", [
    (["fire", "t", "--store", "memory"], "give the hosts with --hosts or --hosts-file"),
    (["fire", "t", "--hosts-file", "/no/such/file", "--store", "memory"], "cannot read --hosts-file"),
    (["fire", "t", "--hosts", "a b", "--store", "memory"], "bad host name 'a b'"),
    (["fire", "t", "--hosts", "a", "--ttl", "0", "--store", "memory"], "ttl must be an integer"),
    (["run", "--host", "h", "--store", "memory", "--", "true"], "give one of --run-id RUN and --standby FIFO"),
    (["run", "--host", "h", "--run-id", "r1", "--standby", "/f", "--store", "memory", "--", "true"],
     "give one of --run-id RUN and --standby FIFO"),
    (["watch", "--host", "h", "--standby-linger", "0", "--store", "memory"],
     "--standby-linger must be a number of seconds above 0, got 0"),
    (["watch", "--host", "h", "--standby-linger", "1e12", "--store", "memory"],
     "--standby-linger must be at most 2592000 seconds (30 days), got 1e+12"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and message in err


def test_missing_task_spooler_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    code, _, err = run(capsys, "watch", "--host", "h", "--queue", "tsp", "--store", "memory")
    assert code == 2 and err.count("\n") == 1
    assert "tsp not found: install the Debian package task-spooler" in err


# -- options checked before anything is written -------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["fire", "t", "--hosts", "a", "--wait", "--ok-codes", "abc"], "--ok-codes must be exit codes"),
    (["fire", "t", "--hosts", "a", "--ok-codes", "0,300"], "--ok-codes must be exit codes"),
    (["fire", "t", "--hosts", "a", "--wait", "--timeout", "-5"], "--timeout must be a number of seconds"),
    (["fire", "t", "--hosts", "a", "--exec-cmd", "ssh {host} true"], "--exec-cmd is only used with"),
    (["fire", "t", "--hosts", "a", "--provider", "exec"], "the exec provider needs --exec-cmd"),
    (["fire", "t", "--hosts", "a", "--retention", "-1"], "--retention must be 0 or more"),
    (["fire", "t", "--hosts", "a", "--serial", "--max-concurrent", "3"], "--serial means --max-concurrent 1"),
    (["fire", "t", "--hosts", "a", "--ttl", "abc"], "argument --ttl: invalid int value"),
    (["watch", "--host", "h", "--config-dir", "/no/such/dir"], "--config-dir /no/such/dir is not a directory"),
    (["watch", "--host", "h", "--check-interval", "0"], "--check-interval must be"),
    (["watch", "--host", "h", "--metrics-port", "70000"], "--metrics-port must be"),
    (["watch", "--host", "h", "--run-cmd", "puppet 'apply"], "No closing quotation"),
    (["history", "--limit", "0"], "--limit must be 1 or more"),
    (["wait", "not an id"], "bad event id"),
    (["drop", "--host", "a b"], "--host: bad host name"),
    (["status", "-o", "yaml"], "argument -o/-w/--output: invalid choice"),
])
def test_every_option_is_checked_first_one_line_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv, "--store", "memory")
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_host_names_are_lower_cased(capsys):
    code, out, err = run(capsys, "fire", "t", "--hosts", "WEB01.Example.com,role:LB", "--provider", "dummy",
                         "--store", "memory")
    assert code == 0 and out == "web01.example.com\n"
    assert "trigger: warning: role:LB has no live member" in err  # the dummy provider resolves roles too


@pytest.mark.parametrize("hosts", ["role:", "a,role:", " role: ,b"])
def test_a_role_without_a_name_says_so(capsys, hosts):
    code, out, err = run(capsys, "fire", "t", "--hosts", hosts, "--store", "memory")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("trigger: error: role: needs a name"), err


def test_o_has_etcdctls_name_w(capsys):
    code, out, _ = run(capsys, "status", "-w", "json", "--store", "memory")
    assert code == 0 and json.loads(out) == []


def test_status_of_named_hosts_only(capsys):
    code, out, _ = run(capsys, "status", "WEB1.example.com", "web2.example.com", "-o", "json", "--store", "memory")
    assert code == 0
    assert [(h["host"], h["alive"], h["pending"]) for h in json.loads(out)] == \
        [("web1.example.com", False, 0), ("web2.example.com", False, 0)]
    code, _, err = run(capsys, "status", "a b", "--store", "memory")
    assert code == 2 and "HOST: bad host name 'a b'" in err


def test_an_event_id_is_itself_last_or_a_unique_beginning():
    from trigger.commands.common import pick_event_id

    kept = ["00066a-bb", "000661ed7fa0-aa", "000661ed7fa1-cc"]  # newest first
    assert pick_event_id("000661ed7fa0-aa", kept) == "000661ed7fa0-aa"
    assert pick_event_id("last", kept) == "00066a-bb"
    assert pick_event_id("000661ed7fa0", kept) == "000661ed7fa0-aa"
    assert pick_event_id("00066a", kept) == "00066a-bb"


def test_an_ambiguous_or_unknown_event_id_names_the_candidates():
    from trigger.commands.common import NotFound, pick_event_id

    kept = [f"0006{i:02d}-x" for i in range(8)]
    with pytest.raises(BadRecord) as ambiguous:
        pick_event_id("0006", kept)
    assert str(ambiguous.value) == ("event id '0006' is ambiguous, 8 kept fires begin with it: "
                                    "000600-x, 000601-x, 000602-x, 000603-x, 000604-x and 3 more")
    with pytest.raises(NotFound) as unknown:
        pick_event_id("ffff", kept)
    assert "no fire ffff is kept" in str(unknown.value) and "the newest: 000600-x, 000601-x, 000602-x" in \
        str(unknown.value)
    with pytest.raises(NotFound, match="none is kept"):
        pick_event_id("last", [])


@pytest.mark.parametrize("argv", [["history", "last"], ["wait", "0006"]])
def test_no_fire_kept_is_one_error_line_and_exit_5(capsys, argv):
    code, out, err = run(capsys, *argv, "--store", "memory")
    assert code == 5 and out == "" and err.count("\n") == 1 and err.startswith("trigger: error: no fire ")


def test_a_store_false_flag_shows_no_default(capsys):
    with pytest.raises(SystemExit):
        main(["watch", "--help"])
    out = capsys.readouterr().out
    assert "--no-standby" in out and "(default: True)" not in out


def test_the_wait_timeouts_of_the_cli_the_puppet_type_and_the_bolt_task_agree():
    import re
    from pathlib import Path

    from trigger.commands.common import DEFAULT_WAIT_TIMEOUT
    from trigger.cli import build_parser

    module = Path(__file__).parents[2] / "puppet" / "trigger"
    init = (module / "manifests" / "init.pp").read_text()
    task = json.loads((module / "tasks" / "fire.json").read_text())
    assert re.search(r"Integer\[1\] \$wait_timeout = (\d+),", init).group(1) == f"{DEFAULT_WAIT_TIMEOUT:g}"
    assert f"(default {DEFAULT_WAIT_TIMEOUT:g})" in task["parameters"]["timeout"]["description"]
    for argv in (["fire", "t", "--hosts", "a"], ["wait", "e1"]):
        assert build_parser(argv).parse_args(argv).timeout == DEFAULT_WAIT_TIMEOUT


# -- help, version, exit codes ------------------------------------------------------


def _all_parsers(parser):
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_every_option_has_help_that_shows_its_default():
    import argparse

    from trigger.cli import build_parser

    for parser in _all_parsers(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{parser.prog} {action.dest} has no help"
            if action.option_strings and not isinstance(action, (argparse._StoreTrueAction,
                                                                 argparse._StoreFalseAction,
                                                                 argparse._HelpAction,
                                                                 argparse._VersionAction)):
                rendered = parser.formatter_class(parser.prog)._get_help_string(action)
                assert "default" in rendered, f"{parser.prog} {action.option_strings} shows no default"
        assert "usage:" in text


@pytest.mark.parametrize("columns", [None, "0", "-5", "57", "wide"])
def test_help_is_as_wide_as_shutil_says_the_terminal_is(monkeypatch, columns):
    import shutil

    from trigger.cli import _columns

    monkeypatch.delenv("COLUMNS", raising=False)
    if columns is not None:
        monkeypatch.setenv("COLUMNS", columns)
    assert _columns() == shutil.get_terminal_size().columns


def test_top_level_help_names_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    for name in ("fire", "wait", "watch", "run", "status", "history", "leader", "drop", "auth"):
        assert f"    {name} " in out, name


@pytest.mark.parametrize("argv", [
    ["fire", "x", "--hosts", "a,b", "--ttl", "3", "--wait", "-o", "json"],
    ["wait", "e1", "--timeout", "1"],
    ["watch", "--host", "a", "--no-standby", "--log-format", "json"],
    ["run", "--host", "a", "--run-id", "r1", "--", "true", "--x"],
    ["status", "--json"], ["history", "e1", "--limit", "3"], ["leader", "db"],
    ["drop", "--host", "a", "--dry-run"], ["auth", "setup", "--hosts", "a", "--dry-run"],
])
def test_a_parser_of_the_named_command_only_parses_as_the_whole_one(argv):
    """main() builds only the command its words name (the others cost a cold start 4 ms)."""
    from trigger.cli import COMMANDS, build_parser

    only = build_parser(argv)
    subparsers = next(a for a in only._actions if isinstance(a, argparse._SubParsersAction))
    assert list(subparsers.choices) == [argv[0]]
    assert vars(only.parse_args(argv)) == vars(build_parser().parse_args(argv))
    assert list(COMMANDS) == ["fire", "wait", "watch", "run", "status", "history", "leader", "drop", "auth",
                             "completion", "manpage"]


def test_a_word_that_is_no_command_is_refused_naming_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fir", "x"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "invalid choice: 'fir'" in err and "'auth'" in err


def test_version_is_the_installed_distributions(capsys):
    """The distribution is `puppet-trigger` (the name `trigger` is another project's)."""
    import tomllib
    from pathlib import Path

    with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert project["name"] == "puppet-trigger"
    assert done.value.code == 0 and capsys.readouterr().out == f"trigger {project['version']}\n"


def test_leader_without_holder_is_not_the_failed_run_code(capsys):
    code, out, err = run(capsys, "leader", "nosuch", "--store", "memory")
    assert code == 5 and out == "" and err == "trigger: error: no holder of 'nosuch'\n"
    code, out, _ = run(capsys, "leader", "nosuch", "-o", "json", "--store", "memory")
    assert code == 5 and json.loads(out) == {"election": "nosuch", "leader": None}


def test_status_json_alias_and_plain_when_piped(capsys):
    code, out, _ = run(capsys, "status", "--json", "--store", "memory")
    assert code == 0 and json.loads(out) == []


def test_a_cold_fire_loads_only_what_it_uses():
    """What a fire does not need stays unloaded: each was milliseconds of every cold start."""
    import subprocess
    import sys

    heavy = ("dataclasses", "inspect", "shutil", "datetime", "logging", "encodings.idna", "ssl", "email",
             "http.client", "trigger.results", "trigger.core", "trigger.procedures")
    code = ("import sys, trigger.cli\n"
            "rc = trigger.cli.main(['fire', 't', '--hosts', 'h1', '--endpoints', 'http://127.0.0.1:9'])\n"
            f"print(rc, [m for m in {heavy!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "no endpoint answered" in done.stderr  # it went as far as asking etcd
    assert done.stdout.strip() == "1 []"
