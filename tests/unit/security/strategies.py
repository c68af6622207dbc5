"""Hostile store content: inbox keys and values of every shape.

Values range from valid records with one field spoiled, through JSON of any
structure, to bytes that are not JSON at all, not UTF-8, larger than the
limit, or nested deeper than Python's JSON parser can recurse. Keys include
event ids with spaces, newlines, shell syntax, `/`, surrogates and NULs.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

from trigger.layout import Layout
from trigger.records import MAX_VALUE_BYTES, Entry, RunRecord

LAYOUT = Layout()
HOST = "node1.test"

SHELLISH = ["$(touch /tmp/pwned)", "`id`", "; rm -rf /", "| nc x 1", "&& reboot", "'\"", "\n",
            "\r\nFAKE LOG LINE", "\x00", "\udcff", "../../etc", "--help", "-rf", "{host}", "%s%n",
            "é", "\u202e", " ", "", "/"]

names = st.one_of(
    st.from_regex(r"[0-9a-f]{16}-[0-9a-f]{8}", fullmatch=True),  # ids as trigger makes them
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(SHELLISH),
    st.builds(lambda a, b: a + b, st.sampled_from(SHELLISH), st.text(max_size=8)),
)

keys = st.one_of(
    st.builds(lambda n: LAYOUT.host_prefix(HOST) + n, names),  # inbox entries
    st.builds(lambda n: LAYOUT.runs_prefix(HOST) + n, names),  # run records
    st.builds(lambda a, b: LAYOUT.host_prefix(HOST) + a + "/" + b, names, names),  # deeper
    st.builds(lambda n: LAYOUT.host_prefix(HOST) + "runs/" + n + "/x", names),
    st.just(LAYOUT.run_lock_key(HOST)),  # the run lock, whatever value a firer puts there
)

def _nested(children):
    return st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.integers(min_value=10**308, max_value=10**320) | st.sampled_from(SHELLISH),
    _nested, max_leaves=20,
)

entries = st.builds(
    Entry,
    id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    trigger=st.text(min_size=1, max_size=40),
    fired_at=st.floats(min_value=0, max_value=4e9),
    hop=st.integers(1, 6), ttl=st.integers(1, 100),
    chain=st.lists(st.sampled_from(["a", "b.example", "node1.test"]), max_size=4).map(tuple),
    origin=st.sampled_from(["", "a", "ci"]),
    max_concurrent=st.integers(0, 5),
)

runs = st.builds(
    RunRecord,
    run_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    host=st.just(HOST),
    state=st.sampled_from(["queued", "started", "finished", "lost"]),
    queued_at=st.none() | st.floats(0, 4e9), started_at=st.none() | st.floats(0, 4e9),
    exit_code=st.none() | st.integers(-255, 255),
    served=st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), max_size=4).map(tuple),
)


@st.composite
def spoiled(draw, records):
    """A valid record's JSON with one field replaced, removed or added."""
    data = json.loads(draw(records).encode())
    field = draw(st.sampled_from(sorted(data) + ["extra"]))
    how = draw(st.sampled_from(["replace", "remove"]))
    if how == "remove":
        data.pop(field, None)
    else:
        data[field] = draw(json_values)
    return json.dumps(data, allow_nan=True).encode()


def _deep(n: int) -> bytes:
    return b'{"id":' * n + b"1" + b"}" * n


values = st.one_of(
    st.builds(lambda e: e.encode(), entries),  # valid entries
    st.builds(lambda r: r.encode(), runs),  # valid run records
    spoiled(entries),
    spoiled(runs),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.integers(1, 4000).map(lambda n: b"[" * n + b"]" * n),  # deeper than json's recursion limit
    st.integers(1, 2000).map(_deep),
    st.integers(1, 3).map(lambda n: b"x" * (MAX_VALUE_BYTES + n)),  # over the limit
    st.sampled_from([b"", b"null", b"NaN", b'{"fired_at": Infinity}', b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00",
                     b'{"id": "a", "trigger": "t", "fired_at": 1' + b"0" * 400 + b"}",
                     b'{"id": "a", "trigger": "t", "fired_at": 1, "hop": 1' + b"0" * 5000 + b"}"]),
)
