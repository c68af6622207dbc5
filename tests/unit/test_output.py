"""The one module every command prints through: table, plain rows, JSON."""

import io
import json
from datetime import datetime

from trigger.output import default_format, iso_utc, show

LONG = "lb01.a-very-long-subdomain-of-the-datacentre-that-goes-on-and-on.example.com"
COLUMNS = [("host", "host"), ("result", "result"), ("exit", "exit_code")]


def test_plain_rows_are_tab_separated_and_never_cut(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    show("plain", [{"host": LONG, "result": "no watcher", "exit_code": None}], COLUMNS, stream=out)
    assert out.getvalue() == f"{LONG}\tno watcher\t-\n"


def test_a_tab_or_newline_in_a_value_stays_inside_its_field():
    out = io.StringIO()
    show("plain", [{"host": "h", "result": "a\tb\nc", "exit_code": 0}], COLUMNS, stream=out)
    assert out.getvalue().split("\t") == ["h", "a\\tb\\nc", "0\n"]


def test_json_is_the_document_with_iso_utc_times():
    out = io.StringIO()
    show("json", [{"host": "h"}], COLUMNS, {"fired_at": iso_utc(1700000000.25)}, stream=out)
    assert json.loads(out.getvalue()) == {"fired_at": "2023-11-14T22:13:20.250Z"}
    assert datetime.fromisoformat(iso_utc(0.0).replace("Z", "+00:00")).timestamp() == 0.0
    assert iso_utc(None) is None


def test_json_defaults_to_the_rows():
    out = io.StringIO()
    show("json", [{"host": "h", "extra": [1]}], COLUMNS, stream=out)
    assert json.loads(out.getvalue()) == [{"host": "h", "extra": [1]}]


def test_table_has_headers_and_every_value():
    out = io.StringIO()
    show("table", [{"host": "web1", "result": "ok", "exit_code": 2}], COLUMNS, stream=out)
    text = out.getvalue()
    assert "host" in text and "web1" in text and " 2 " in text


def test_default_format_follows_the_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert default_format(io.StringIO()) == "plain" and default_format(Tty()) == "table"
