"""trigger/puppetdb.py on recorded PuppetDB answers, served over loopback
HTTP (the master lab's tests, test_master.py, ask the real PuppetDB)."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from trigger import cli
from trigger.puppetdb import PuppetDB, PuppetDBError, certnames, pql

# Recorded from the master lab's PuppetDB 7.12.1 (trimmed).
RESOURCE_ROWS = [{"certname": "node3"}, {"certname": "node2"}, {"certname": "node2"}]
PQL_ERROR = ("'facts.networking.hostname' is not a queryable object for nodes. Known queryable "
             "objects are 'cached_catalog_status', 'catalog_environment'")


def test_a_resource_reference_becomes_the_nodes_with_that_resource():
    assert pql("Class[profile::loadbalancer]") == \
        'resources[certname] { type = "Class" and title = "Profile::Loadbalancer" }'
    assert pql("file['/etc/motd']") == 'resources[certname] { type = "File" and title = "/etc/motd" }'
    text = 'inventory[certname] { facts.os.family = "Debian" }'
    assert pql(text) == text


def test_answers_become_sorted_distinct_certnames():
    assert certnames(RESOURCE_ROWS) == ["node2", "node3"]
    with pytest.raises(PuppetDBError, match="project it"):
        certnames([{"name": "fqdn"}])
    with pytest.raises(PuppetDBError, match="not a list"):
        certnames({"error": "x"})


@pytest.fixture
def puppetdb():
    """A loopback HTTP server answering each POSTed query from `answers` (status, body)."""
    answers: dict[str, tuple[int, bytes]] = {}
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["query"]
            asked.append(query)
            status, body = answers.get(query, (200, b"[]"))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", answers, asked
    finally:
        server.shutdown()
        server.server_close()


def test_nodes_asks_the_pql_and_reads_the_rows(puppetdb):
    url, answers, asked = puppetdb
    answers[pql("Class[Lb]")] = (200, json.dumps(RESOURCE_ROWS).encode())
    assert PuppetDB(url).nodes("Class[Lb]") == ["node2", "node3"]
    assert asked == ['resources[certname] { type = "Class" and title = "Lb" }']


@pytest.mark.parametrize("status, body, says", [
    (400, PQL_ERROR.encode(), "rejected the query"),
    (403, b"Forbidden", "refused this client's certificate"),
    (500, b"boom", "HTTP 500"),
    (200, b"<html>", "not JSON"),
])
def test_a_bad_answer_is_one_line(puppetdb, status, body, says):
    url, answers, _ = puppetdb
    answers["nodes[certname] {}"] = (status, body)
    with pytest.raises(PuppetDBError, match=says) as caught:
        PuppetDB(url).nodes("nodes[certname] {}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("argv, says", [
    (["--query", "Class[Lb]"], "--query needs --puppetdb"),
    (["--hosts", "a", "--puppetdb", "http://127.0.0.1:1"], "--puppetdb is only used with --query"),
    (["--query", "Class[Lb]", "--puppetdb", "ftp://x"], "give http(s)://HOST:PORT"),
    (["--query", "Class[Lb]", "--puppetdb", "https://x:1", "--puppetdb-cert", "/c"], "give all of"),
])
def test_fire_query_bad_input_is_exit_2_before_anything(capsys, argv, says):
    assert cli.main(["fire", "lbs", "--endpoints", "http://127.0.0.1:1", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_fire_query_matching_nothing_is_refused(puppetdb, capsys):
    url, _, _ = puppetdb
    assert cli.main(["fire", "lbs", "--endpoints", "http://127.0.0.1:1", "--query", "Class[Lb]",
                     "--puppetdb", url]) == 2
    assert "matches no active node" in capsys.readouterr().err


def test_fire_query_shows_the_hosts_it_resolved(puppetdb, capsys):
    url, answers, _ = puppetdb
    answers[pql("Class[Lb]")] = (200, json.dumps(RESOURCE_ROWS).encode())
    assert cli.main(["fire", "lbs", "--provider", "dummy", "--query", "Class[Lb]", "--puppetdb", url]) == 0
    captured = capsys.readouterr()
    assert "--query matched 2 host(s): node2, node3" in captured.err
    assert captured.out.split() == ["node2", "node3"]  # the dummy provider: the hosts it would fire at
