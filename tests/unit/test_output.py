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
