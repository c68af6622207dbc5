"""Validation of everything read back from the store or given on the command line."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trigger.records import (
    BadRecord,
    MAX_RUN_BYTES,
    MAX_VALUE_BYTES,
    Entry,
    RunRecord,
    check_host,
    check_ttl,
    parse_entry,
    parse_run,
    split_hosts,
)


@pytest.mark.parametrize("host", ["lb01.example.com", "node1", "a", "web_1-x.y"])
def test_good_hosts(host):
    assert check_host(host) == host


@pytest.mark.parametrize("host", ["", " ", "a b", "a/b", "a;rm -rf /", "$(x)", "`x`", "a|b",
                                  "-rf", ".hidden", "a\nb", "é.example", None, 3])
def test_bad_hosts_name_the_host(host):
    with pytest.raises(BadRecord, match="host name"):
        check_host(host)


def test_split_hosts_dedups_and_rejects_empty_members():
    assert split_hosts("a,b,a") == ["a", "b"]
    with pytest.raises(BadRecord, match="is empty"):
        split_hosts("")
    with pytest.raises(BadRecord, match="non-empty"):
        split_hosts("a,,b")


@pytest.mark.parametrize("ttl", [1, 5, 100])
def test_good_ttl_from_1_to_100_inclusive(ttl):
    assert check_ttl(ttl) == ttl


@pytest.mark.parametrize("ttl", [0, 101, -1, "5", 2.5, True])
def test_bad_ttl(ttl):
    with pytest.raises(BadRecord, match="ttl must be an integer"):
        check_ttl(ttl)


def test_entry_round_trip():
    e = Entry("0001-ab", "refresh lbs", 12.5, hop=2, ttl=4, chain=("a", "b"), origin="b")
    assert parse_entry(e.encode()) == e


def test_run_round_trip():
    r = RunRecord("r1", "h", "finished", 1.0, 2.0, 3.0, 2, ("e1",), 1, ("a",), "")
    assert parse_run(r.encode()) == r


@pytest.mark.parametrize("value, reason", [
    (b"{not json", "not JSON"),
    (b"[1,2]", "not an object"),
    (b'{"id":"e1","fired_at":1}', "'trigger' is missing"),
    (b'{"id":"e1","trigger":5,"fired_at":1}', "'trigger' has the wrong type"),
    (b'{"id":"e1","trigger":"t","fired_at":1,"hop":true}', "'hop' has the wrong type"),
    (b'{"id":"e1","trigger":"t","fired_at":1,"hop":0}', "at least 1"),
    (b'{"id":"a b","trigger":"t","fired_at":1}', "bad event id"),
    (b'{"id":"e1","trigger":"t","fired_at":1,"chain":["x;y"]}', "bad host name"),
    (b'{"id":"e1","trigger":"t","fired_at":1,"ttl":1000}', "ttl must be"),
    (b"\xff\xfe", "not JSON"),
    (b'{"id":"e1","trigger":"' + b"x" * 9000 + b'","fired_at":1}', "more than 8192"),
])
def test_bad_entries_say_why(value, reason):
    with pytest.raises(BadRecord, match=reason):
        parse_entry(value)


def test_a_value_of_exactly_the_size_limit_is_read_and_one_byte_more_is_not():
    """The limit is on bytes, inclusive: an entry of 8 KiB, a run record of
    1 MiB (it lists the ids it served). Padded with JSON whitespace, both
    values are good JSON: only the size can refuse the second."""
    entry = b'{"id":"e1","trigger":"t","fired_at":1}'
    run = b'{"run_id":"r1","host":"h","state":"queued"}'
    for value, parse, limit in ((entry, parse_entry, MAX_VALUE_BYTES), (run, parse_run, MAX_RUN_BYTES)):
        at_limit = value + b" " * (limit - len(value))
        parse(at_limit)
        with pytest.raises(BadRecord, match=f"is {limit + 1} bytes, more than {limit}"):
            parse(at_limit + b" ")


@settings(max_examples=300)
@given(st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=6),
                 max_leaves=20).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={
        "id": st.text(max_size=10), "trigger": st.text(max_size=10), "fired_at": st.floats(),
        "hop": st.integers(), "ttl": st.integers(), "chain": st.lists(st.text(max_size=5)),
        "origin": st.text(max_size=5)}).map(lambda v: json.dumps(v).encode()),
))
def test_any_value_parses_or_raises_bad_record_only(value):
    for parse in (parse_entry, parse_run):
        try:
            parse(value)
        except BadRecord:
            pass
