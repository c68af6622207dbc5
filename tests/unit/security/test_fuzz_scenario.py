"""Scenario files for the simulator, fuzzed through its public loader,
`simulator.scenario.load_scenario(path)`: whatever the file holds, the
loader returns a Scenario or raises its own one-line `ScenarioError`.

Mutations of the shipped scenarios (a field replaced by any YAML value)
reach deep into the checks; random documents and random bytes test the
reading and YAML layers. Name ranges are kept small here: how big a range
may be is its own test below.

The fuzz found four ways the loader failed otherwise (a huge integer,
deep nesting, bytes that are not UTF-8, an unbounded name range); each
has its own test below.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from simulator.scenario import ScenarioError, load_scenario

from .conftest import bounded_memory, fuzz_settings

pytestmark = pytest.mark.fuzz

SCENARIOS = sorted(Path(__file__).resolve().parents[3].joinpath("simulator", "scenarios").glob("*.yaml"))
SEEDS = [yaml.safe_load(p.read_text()) for p in SCENARIOS]


FILE = Path(tempfile.mkdtemp(prefix="scenario-fuzz-")) / "scenario.yaml"


def teardown_module():
    shutil.rmtree(FILE.parent, ignore_errors=True)

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.integers(min_value=10**308, max_value=10**320),
    st.sampled_from(["all", "role:web", "role:nosuch", "web[01:03].example.com", "x[5:1]", "a[1:2][3:4]",
                     "b[", "once", "always", "never", "until_converged", "restart_etcd", "cut_off",
                     "slow_runs", "kill_tsp", "compact_etcd", "kill_run", "reboot", "ambiguous_writes",
                     "latency", "duplicate_watcher", {"uniform": [0.1, 2]}, {"exponential": -1},
                     "$(id)", "a\nb", "", "refresh load balancers"]),
)
def _nested(children):
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10) | st.integers(), children,
                                                          max_size=4)


yaml_values = st.recursive(leaves, _nested, max_leaves=12)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, prefix + (i,))


@st.composite
def mutated(draw):
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        if not path:
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.integers(0, 5)) == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(yaml_values)
    return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8")


documents = st.one_of(
    mutated(),
    mutated(),
    yaml_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True).encode("utf-8")),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"---", b"- a", b"!!python/object/apply:os.system ['id']", b"a: &x [*x]",
                     b"a: !!binary AAAA", b"until: .inf\nnodes: {a: b}\nroles: {b: {}}"]),
)


@fuzz_settings(quick=200)
@given(document=documents)
def test_any_scenario_file_loads_or_fails_with_one_line(document):
    FILE.write_bytes(document)
    try:
        with bounded_memory("scenario"):
            load_scenario(FILE)
    except ScenarioError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        event("ScenarioError")
    else:
        event("loaded")


# -- what the fuzz found -------------------------------------------------------------------


def _load_text(tmp_path, data: bytes):
    path = tmp_path / "s.yaml"
    path.write_bytes(data)
    return load_scenario(path)


def test_a_huge_integer_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError):
        _load_text(tmp_path, b"until: 1" + b"0" * 400 + b"\nnodes: {a: web}\nroles: {web: {}}\n")


def test_deep_nesting_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError):
        _load_text(tmp_path, b"[" * 20000)


def test_a_file_that_is_not_utf8_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError):
        _load_text(tmp_path, b"\xff\xfe not utf-8")


def test_a_huge_name_range_is_refused_within_bounded_memory(tmp_path):
    """`web[0:99999999]` (or ranges multiplied) must be refused, not expanded
    until memory runs out. Run in a child limited to 256 MiB of address space."""
    path = tmp_path / "s.yaml"
    path.write_text("until: 10\nnodes:\n  'w[0:99999999]': web\nroles:\n  web: {}\n")
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (256 << 20, 256 << 20))
        from simulator.scenario import ScenarioError, load_scenario
        try:
            load_scenario({str(path)!r})
        except ScenarioError:
            sys.exit(0)
        except MemoryError:
            sys.exit(3)
        sys.exit(4)
    """)
    done = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True,
                          cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, (done.returncode, done.stderr[-300:])
