"""`trigger-sim plan`: exit codes for CI, bad input as one line, the scenario written and run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from simulator.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
PUPPET = str(FIXTURES / "puppet")


def run(capsys, *argv):
    status = main(["plan", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_the_report_and_exit_0_without_fail_on(capsys):
    status, out, err = run(capsys, "--catalogs", PUPPET)
    assert status == 0 and err == ""
    assert "trigger-sim plan: 8 nodes, 4 triggers, 1 loop(s), 2 warning(s)" in out
    assert "refresh load balancers" in out and "Exec[rebuild cache]" in out


@pytest.mark.parametrize("fail_on, status, first", [
    ("loop", 1, "trigger-sim: loop: app01.example.com, app02.example.com through"),
    ("storm:5", 0, None),
    ("storm:2", 1, "trigger-sim: storm: one wave can bring 3 fires into lb01.example.com (more than 2)"),
    ("warning", 1, "trigger-sim: warning: app01.example.com: Exec[rebuild cache]"),
    ("loop,storm,warning", 1, "trigger-sim: loop:"),
])
def test_fail_on_exits_1_naming_each_finding(capsys, fail_on, status, first):
    code, out, err = run(capsys, "--catalogs", PUPPET, "--fail-on", fail_on)
    assert code == status
    if first is None:
        assert err == ""
    else:
        assert err.splitlines()[0].startswith(first)


def test_json_output_is_one_document(capsys):
    status, out, err = run(capsys, "--catalogs", PUPPET, "-o", "json")
    assert status == 0
    doc = json.loads(out)
    assert {"nodes", "triggers", "loops", "fan_in", "warnings"} <= set(doc)


@pytest.mark.parametrize("argv, message", [
    ([], "give one of --catalogs DIR, --manifest FILE, --environment-path P or --puppetdb URL"),
    (["--catalogs", "/nonexistent"], "/nonexistent: not a directory"),
    (["--catalogs", PUPPET, "--fail-on", "loops"], "--fail-on: unknown finding 'loops'"),
    (["--catalogs", PUPPET, "--check"], "--check needs --run"),
    (["--catalogs", PUPPET, "--changes", "often"], "--changes 'often': expected"),
    (["--manifest", "site.pp"], "compiling needs --facts DIR"),
])
def test_bad_usage_is_one_line_and_exit_2(capsys, argv, message):
    status, out, err = run(capsys, *argv)
    assert status == 2
    assert err == f"trigger-sim: {message}" + err[len(f"trigger-sim: {message}"):]
    assert err.count("\n") == 1


def test_a_bad_file_is_named_and_the_rest_of_the_fleet_planned(capsys, tmp_path):
    shutil.copytree(FIXTURES / "puppet", tmp_path, dirs_exist_ok=True)
    (tmp_path / "zz.json").write_text("[1, 2")
    status, out, err = run(capsys, "--catalogs", str(tmp_path))
    assert status == 2
    assert "8 nodes" in out
    assert err.splitlines() == [f"trigger-sim: {tmp_path / 'zz.json'}: not JSON: "
                                "Expecting ',' delimiter: line 1 column 6 (char 5)"]


def test_nothing_readable_is_exit_2(capsys, tmp_path):
    (tmp_path / "a.json").write_text("{}")
    status, out, err = run(capsys, "--catalogs", str(tmp_path))
    assert status == 2 and out == ""
    assert err.splitlines()[-1] == "trigger-sim: no catalog could be read: nothing to plan"


def test_the_written_scenario_runs_with_trigger_sim_run(capsys, tmp_path):
    status, out, err = run(capsys, "--catalogs", PUPPET, "--out", str(tmp_path / "plan"), "--name", "shop")
    assert status == 0
    assert json.loads((tmp_path / "plan" / "plan.json").read_text())["loops"]
    assert main(["run", str(tmp_path / "plan" / "shop.yaml"), "--check", "--no-plot",
                 "--out", str(tmp_path / "sim")]) == 0
    report = json.loads((tmp_path / "sim" / "report.json").read_text())
    assert report["check"]["ok"]


def test_run_check_simulates_at_once(capsys):
    status, out, err = run(capsys, "--catalogs", PUPPET, "--run", "--check", "-o", "json")
    assert status == 0
    doc = json.loads(out)
    sim = doc["simulation"]
    assert sim["check"]["ok"]
    refused = {r["trigger"] for r in sim["refused"]} if "refused" in sim else None
    assert refused is None or refused <= {"poke app01.example.com", "poke app02.example.com"}
    lb01 = next(n for n in sim["nodes"] if n["host"] == "lb01.example.com")
    assert lb01["fires_received"] == 4  # 3 webs and the release


def test_run_with_races_reports_ranges(capsys):
    status, out, err = run(capsys, "--catalogs", PUPPET, "--run", "--races", "3", "-o", "json")
    assert status == 0
    races = json.loads(out)["simulation"]["races"]
    assert races["orders"] == 3 and set(races) == {"orders", "window", "ranges", "races"}


@pytest.fixture
def puppetdb():
    """PuppetDB's query API over loopback HTTP, answering with the control repo's catalogs in
    the query shape (/pdb/query/v4/catalogs/<node>) and a report per node in which its
    vhost changed once in two runs."""
    import http.server
    import threading

    catalogs = {p.stem: p.read_bytes() for p in (FIXTURES / "query").glob("*.json")}
    answers = {
        "nodes[certname] {}": [{"certname": name} for name in catalogs],
        "reports[certname, hash] { noop = false }": [{"certname": name, "hash": f"{name}-{run}"}
                                                     for name in catalogs for run in (1, 2)],
        'events[certname, report, resource_type, resource_title] { status = "success" }': [
            {"certname": "web01.example.com", "report": "web01.example.com-1", "resource_type": "File",
             "resource_title": "/etc/shop-vhost.conf"}],
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, status: int, body: bytes):
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            name = self.path.rsplit("/", 1)[-1]
            self.reply(200, catalogs[name]) if name in catalogs else self.reply(404, b"no such node")

        def do_POST(self):
            query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["query"]
            self.reply(200, json.dumps(answers[query]).encode()) if query in answers \
                else self.reply(400, f"unexpected query {query}".encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_puppetdb_plans_the_same_fleet_as_its_catalogs_on_disk(capsys, puppetdb):
    status, from_db, err = run(capsys, "--puppetdb", puppetdb, "-o", "json")
    assert status == 0, err
    _, from_dir, _ = run(capsys, "--catalogs", str(FIXTURES / "query"), "-o", "json")
    db, disk = json.loads(from_db), json.loads(from_dir)
    for key in ("nodes", "triggers", "loops", "fan_in"):
        assert db[key] == disk[key], key


def test_puppetdb_reports_are_the_change_rates(capsys, puppetdb, tmp_path):
    import yaml

    status, _, err = run(capsys, "--puppetdb", puppetdb, "--changes", "reports", "--out", str(tmp_path))
    assert status == 0, err
    scenario = yaml.safe_load((tmp_path / "plan.yaml").read_text())
    rates = {role: spec["resources"]["File[/etc/shop-vhost.conf]"]["changes"]
             for role, spec in scenario["roles"].items() if "File[/etc/shop-vhost.conf]" in spec.get("resources", {})}
    assert sorted(rates.values()) == [0.0, 0.5]  # web01 changed in one of its two runs, the others in none


@pytest.mark.parametrize("argv, says", [
    (["--puppetdb", "http://127.0.0.1:9"], "does not answer"),
    (["--puppetdb", "ftp://puppet"], "give http(s)://HOST:PORT"),
    (["--catalogs", PUPPET, "--changes", "reports"], "--changes reports needs --puppetdb"),
    (["--puppetdb", "https://puppet:8081", "--puppetdb-cert", "c.pem"], "give all of --puppetdb-cacert"),
])
def test_puppetdb_bad_input_is_one_line_and_exit_2(capsys, argv, says):
    status, out, err = run(capsys, *argv)
    assert status == 2 and says in err and len(err.strip().splitlines()) == 1, err
