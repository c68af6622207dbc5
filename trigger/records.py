"""What trigger keeps in the store: inbox entries and run records.

Both are JSON objects. Everything read back from the store is untrusted:
`parse_entry` and `parse_run` check every field and raise `BadRecord` with
a one-line reason, so a corrupt value can be set aside, never crash a
watcher and never reach a shell.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import NamedTuple

MAX_VALUE_BYTES = 8192
MAX_RUN_BYTES = 1024 * 1024
MAX_SERVED = 20000  # ids a run record lists; etcd takes requests up to 1.5 MiB
MAX_CLAIM_BYTES = 256 * 1024  # of ids one run claims: its record stays far below that limit
MAX_NAME_CHARS = 256
MAX_TTL = 100
DEFAULT_TTL = 5
MAX_LIMIT = 100000
MAX_TAGS = 32  # Puppet tags one fire may ask for (`--tags a,b`)
OUTPUT_TAIL_BYTES = 4096  # the last 4 KiB of a run's output, kept with its finished record
REFUSED_OPTION = "refused option"  # a finished run that ran nothing: its fires asked for an option
                                   # the watcher does not allow (how its reason begins)

# Hostnames, FQDNs and the ids we generate: no spaces, no '/', nothing a
# shell would read as syntax.
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Puppet's tag syntax (lower case; never starts with '-', so never an option).
_TAG_RE = re.compile(r"[a-z0-9_][a-z0-9_:.-]{0,127}")

RUN_STATES = ("queued", "started", "finished", "lost")


# Fields added later, written only when they differ from their default: a
# normal fire's entry and a run without output are the bytes they always were.
_LEAN = {"noop": False, "tags": (), "output": ""}


def _encode(record) -> bytes:
    # json writes the tuples in it as lists
    data = {k: v for k, v in record._asdict().items() if k not in _LEAN or v != _LEAN[k]}
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


class BadRecord(ValueError):
    """A stored value or an argument that trigger refuses, with the reason."""


def check_host(host: object) -> str:
    """Return `host` if it is a usable host name, else raise BadRecord."""
    if not isinstance(host, str) or not host:
        raise BadRecord(f"host name must be a non-empty string, got {host!r}")
    if not _HOST_RE.fullmatch(host):
        raise BadRecord(
            f"bad host name {host!r}: use letters, digits, '.', '-' and '_' only"
        )
    return host


def check_id(value: object, what: str = "id") -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise BadRecord(f"bad {what} {value!r}")
    return value


def check_ttl(ttl: object) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL:
        raise BadRecord(f"ttl must be an integer from 1 to {MAX_TTL}, got {ttl!r}")
    return ttl


def check_limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise BadRecord(f"max_concurrent must be an integer from 0 to {MAX_LIMIT}, got {value!r}")
    return value


def check_tags(tags: object) -> tuple[str, ...]:
    """Puppet tags for `--tags`: sorted, each once (the class of runs a fire joins)."""
    if not isinstance(tags, (list, tuple)) or len(tags) > MAX_TAGS:
        raise BadRecord(f"tags must be a list of at most {MAX_TAGS}, got {tags!r:.60}")
    for tag in tags:
        if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
            raise BadRecord(f"bad tag {tag!r:.60}: use lower-case letters, digits, '_', ':', '.' and '-'")
    return tuple(sorted(set(tags)))


def split_tags(text: str) -> tuple[str, ...]:
    """Parse `--tags a,b` (Puppet's tags are case-insensitive: lower-cased)."""
    tags = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not tags:
        raise BadRecord("--tags is empty")
    return check_tags(tags)


# -- run options: what a fire may add to a watcher's command ----------------------

RUN_OPTIONS = ("noop", "tags")  # what a fire can ask for (`trigger fire --noop --tags a,b`)
PUPPET_RUNS = (("puppet", "agent"), ("puppet", "apply"))  # commands that take both by default


def default_run_options(argv: list[str]) -> tuple[str, ...]:
    """The options a watcher allows unless told: Puppet's for `puppet agent`/`puppet apply`."""
    if len(argv) >= 2 and (argv[0].rsplit("/", 1)[-1], argv[1]) in PUPPET_RUNS:
        return RUN_OPTIONS
    return ()


def allowed_run_options(text: str | None, argv: list[str]) -> tuple[str, ...]:
    """Parse `--run-options noop,tags` ('none': a fire may add nothing; None: the default for `argv`)."""
    if text is None:
        return default_run_options(argv)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return ()
    unknown = [n for n in names if n not in RUN_OPTIONS]
    if unknown or not names:
        raise BadRecord(f"--run-options takes {', '.join(RUN_OPTIONS)} or none, got {text!r}")
    return tuple(n for n in RUN_OPTIONS if n in names)


def split_hosts(text: str) -> list[str]:
    """Parse `--hosts a,b,c`; duplicates collapse, order is kept."""
    hosts = [h.strip() for h in text.split(",")]
    if not text.strip():
        raise BadRecord("--hosts is empty")
    return list(dict.fromkeys(check_host(h) for h in hosts))


class Entry(NamedTuple):
    """One fire as seen by one target host: the value of an inbox key."""

    id: str
    trigger: str
    fired_at: float
    hop: int = 1
    ttl: int = DEFAULT_TTL
    chain: tuple[str, ...] = ()
    origin: str = ""
    max_concurrent: int = 0  # how many of the trigger's hosts may run at once; 0: no limit
    noop: bool = False  # run the command in noop mode (`--noop`)
    tags: tuple[str, ...] = ()  # Puppet tags the run is limited to (`--tags`), sorted

    def encode(self) -> bytes:
        return _encode(self)


class RunRecord(NamedTuple):
    """One queued run of a host, from queueing to its exit code."""

    run_id: str
    host: str
    state: str
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    served: tuple[str, ...] = ()
    hop: int = 0
    chain: tuple[str, ...] = ()
    reason: str = ""
    limits: tuple[tuple[str, int], ...] = ()  # (trigger, max_concurrent) of what it served
    noop: bool = False  # the options of the fires it serves (one class: `core.same_class`)
    tags: tuple[str, ...] = ()
    output: str = ""  # the last OUTPUT_TAIL_BYTES of its command's output, once finished
    execution: str = ""  # which execution of the run started it (its lease): a run is carried out once

    def encode(self) -> bytes:
        return _encode(self)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "started")


def _load_object(value: bytes, limit: int = MAX_VALUE_BYTES) -> dict:
    if len(value) > limit:
        raise BadRecord(f"value is {len(value)} bytes, more than {limit}")
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting: RecursionError
        raise BadRecord(f"value is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRecord(f"value is JSON {type(data).__name__}, not an object")
    return data


_REQUIRED = object()


def _field(data: dict, name: str, types, default=_REQUIRED):
    if name not in data:
        if default is _REQUIRED:
            raise BadRecord(f"field {name!r} is missing")
        return default
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, types):
        raise BadRecord(f"field {name!r} has the wrong type: {value!r:.60}")
    return value


def _time(data: dict, name: str, default=_REQUIRED) -> float | None:
    """A time in seconds: a number that fits a float (JSON integers have no
    size limit, and float() of a 400-digit one overflows)."""
    value = _field(data, name, (int, float, type(None)) if default is None else (int, float), default)
    if value is None:
        return None
    try:
        return float(value)
    except OverflowError:
        raise BadRecord(f"field {name!r} is out of range") from None


def _hosts(data: dict, name: str) -> tuple[str, ...]:
    value = _field(data, name, list, [])
    if len(value) > MAX_TTL + 1:
        raise BadRecord(f"field {name!r} is too long ({len(value)} hosts)")
    return tuple(check_host(h) for h in value)


# Parsing is a pure function of the bytes and the records are frozen, so
# one parse serves every reader of the same value: a fire writes the same
# value into every target's inbox, where the watcher and the run read it.
# Values above MAX_VALUE_BYTES are refused (an entry) or not kept (a run
# record listing thousands of fires), and so is anything but bytes (a
# bytearray cannot be a key).
MEMO_VALUES = 1024


def parse_entry(value: bytes) -> Entry:
    """The inbox entry a value holds; BadRecord with the reason if it holds none."""
    if type(value) is bytes and len(value) <= MAX_VALUE_BYTES:
        return _memo_entry(value)
    return _parse_entry(value)


def _parse_entry(value: bytes) -> Entry:
    data = _load_object(value)
    trigger = _field(data, "trigger", str)
    if not trigger or len(trigger) > MAX_NAME_CHARS:
        raise BadRecord(f"field 'trigger' must be 1 to {MAX_NAME_CHARS} characters")
    hop = _field(data, "hop", int, 1)
    if hop < 1:
        raise BadRecord(f"field 'hop' must be at least 1, got {hop}")
    origin = _field(data, "origin", str, "")
    return Entry(
        id=check_id(_field(data, "id", str), "event id"),
        trigger=trigger,
        fired_at=_time(data, "fired_at"),
        hop=hop,
        ttl=check_ttl(_field(data, "ttl", int, DEFAULT_TTL)),
        chain=_hosts(data, "chain"),
        origin=check_host(origin) if origin else "",
        max_concurrent=check_limit(_field(data, "max_concurrent", int, 0)),
        noop=_flag(data, "noop"),
        tags=check_tags(_field(data, "tags", list, [])),
    )


def _flag(data: dict, name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise BadRecord(f"field {name!r} must be true or false, got {value!r:.60}")
    return value


def parse_run(value: bytes) -> RunRecord:
    """The run record a value holds; BadRecord with the reason if it holds none."""
    if type(value) is bytes and len(value) <= MAX_VALUE_BYTES:
        return _memo_run(value)
    return _parse_run(value)


def _parse_run(value: bytes) -> RunRecord:
    data = _load_object(value, MAX_RUN_BYTES)
    state = _field(data, "state", str)
    if state not in RUN_STATES:
        raise BadRecord(f"field 'state' must be one of {', '.join(RUN_STATES)}")

    def when(name):
        return _time(data, name, None)

    served = _field(data, "served", list, [])[:MAX_SERVED]
    return RunRecord(
        run_id=check_id(_field(data, "run_id", str), "run id"),
        host=check_host(_field(data, "host", str)),
        state=state,
        queued_at=when("queued_at"),
        started_at=when("started_at"),
        finished_at=when("finished_at"),
        exit_code=_field(data, "exit_code", (int, type(None)), None),
        served=tuple(check_id(s, "event id") for s in served),
        hop=_field(data, "hop", int, 0),
        chain=_hosts(data, "chain"),
        reason=_field(data, "reason", str, "")[:MAX_NAME_CHARS],
        limits=tuple(_limit_pair(p) for p in _field(data, "limits", list, [])[:MAX_SERVED]),
        noop=_flag(data, "noop"),
        tags=check_tags(_field(data, "tags", list, [])),
        output=_field(data, "output", str, "")[-OUTPUT_TAIL_BYTES:],
        execution=_field(data, "execution", str, "")[:MAX_NAME_CHARS],
    )


def lock_value(run_id: str, execution: str) -> bytes:
    """The run lock's value: the run and which execution of it holds the lock."""
    return f"{run_id} {execution}".encode()


def parse_lock(value: bytes) -> tuple[str, str]:
    """(run id, execution) of a run lock's value; an older `trigger run` wrote the run id alone."""
    run_id, _, execution = value.decode("utf-8", "replace").partition(" ")
    return run_id, execution


_memo_entry = lru_cache(maxsize=MEMO_VALUES)(_parse_entry)
_memo_run = lru_cache(maxsize=MEMO_VALUES)(_parse_run)


def _limit_pair(pair) -> tuple[str, int]:
    if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
        raise BadRecord(f"bad limit {pair!r:.60}")
    return pair[0][:MAX_NAME_CHARS], check_limit(pair[1])
