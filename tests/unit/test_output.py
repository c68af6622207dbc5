"""The one module every command prints through: table, plain rows, JSON."""

import io
import json
from datetime import datetime

from trigger.output import default_format, iso_utc, one_line, show

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


def test_one_line_escapes_exactly_the_control_and_line_separating_characters():
    """Its shortcut for text with nothing unprintable gives what the character by character
    escape gives, for every character of the Basic Multilingual Plane and a few past it."""
    import unicodedata

    def escaped(text: str) -> str:
        return "".join(ch.encode("unicode_escape").decode("ascii")
                       if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)

    for code in [*range(0x10000), 0x1F600, 0xE0001, 0x10FFFD]:
        ch = chr(code)
        assert one_line(f"a{ch}b") == escaped(f"a{ch}b"), hex(code)
    assert one_line("run r1 finished, exit 0") == "run r1 finished, exit 0"
    assert one_line("a\tb\nc\u2028") == "a\\tb\\nc\\u2028" and one_line(3) == "3" and one_line("") == ""


def test_a_table_at_80_columns_never_wraps_host_names_or_event_ids(monkeypatch):
    from trigger.output import Key

    monkeypatch.setenv("COLUMNS", "80")
    hosts = ["lb01.example.com", "web-frontend-07.prod.eu-west.example.com"]
    event_id = "000661ed7fa0b1c2-0a1b2c3d"
    rows = [{"host": h, "event": event_id, "note": "a long note that may fold over lines " * 2} for h in hosts]
    out = io.StringIO()
    show("table", rows, [("host", Key("host")), ("event", Key("event")), ("note", "note")], stream=out)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    for host in hosts:
        assert sum(host in line for line in lines) == 1, out.getvalue()  # whole, on one line
    assert sum(event_id in line for line in lines) == 2, out.getvalue()  # whole, once per row


def test_times_are_relative_in_a_table_and_iso_in_plain_rows_durations_rounded_alike():
    import time

    from trigger.output import Moment, Seconds, rounded_seconds

    when = iso_utc(time.time() - 185)
    row = {"started": when, "took": rounded_seconds(2.003969192504883)}
    columns = [("started", Moment("started")), ("took", Seconds("took"))]
    plain, table, as_json = io.StringIO(), io.StringIO(), io.StringIO()
    show("plain", [row], columns, stream=plain)
    show("table", [row], columns, stream=table)
    show("json", [row], columns, stream=as_json)
    assert plain.getvalue() == f"{when}\t2.004\n"
    assert json.loads(as_json.getvalue()) == [{"started": when, "took": 2.004}]
    assert "3 min ago" in table.getvalue() and "2.0s" in table.getvalue()


def test_how_long_ago_as_people_say_it():
    from trigger.output import ago

    assert [ago(s) for s in (0.4, 59, 60, 3599, 3600, 86399, 2 * 86400)] == \
        ["0 s ago", "59 s ago", "1 min ago", "59 min ago", "1 h ago", "23 h ago", "2 d ago"]
    assert ago(-30) == "in 30 s" and ago(-0.5) == "0 s ago"  # a clock a little ahead is now
