"""Scenario files: YAML in, a checked `Scenario` out, or one `ScenarioError`.

Every value is checked here, once, so the simulation never meets a bad
field: an error names the field by its path (`roles.web.resources.X.changes`)
and says what was expected, on one line. The format is documented with a
commented example in simulator/README.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trigger.policy import MEMBER_TTL, STANDBY_LINGER, WAIT_TIMEOUT, WATCH, WatchPolicy
from trigger.records import MAX_LIMIT, MAX_TTL, BadRecord, check_host

CHANGES = ("once", "always", "never", "until_converged")
# Issue 21's kinds last: a killed `trigger run` whose command survives it, a
# command's background child, `tsp -k`, a store that never answers, a stepped clock.
NEW_FAULTS = ("kill_runner", "orphan_child", "kill_job", "black_hole", "clock_step")
FAULT_KINDS = ("cut_off", "kill_watcher", "restart_etcd", "compact_etcd", "slow_runs", "kill_tsp",
               "kill_run", "reboot", "ambiguous_writes", "latency", "duplicate_watcher") + NEW_FAULTS
NODE_FAULTS = ("cut_off", "kill_watcher", "slow_runs", "kill_tsp", "kill_run", "reboot",
               "ambiguous_writes", "latency", "duplicate_watcher") + NEW_FAULTS
INSTANT_FAULTS = ("compact_etcd", "kill_run", "kill_runner", "kill_job")  # they happen at once: no `for`


class ScenarioError(ValueError):
    """A scenario the simulator cannot run; the message names the field."""


# -- the checked scenario --------------------------------------------------------


@dataclass(frozen=True)
class Duration:
    """A run-duration distribution, sampled with a node's own random stream."""

    kind: str  # fixed | uniform | normal | exponential
    a: float
    b: float = 0.0

    def sample(self, rng) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "normal":
            return max(0.1, rng.gauss(self.a, self.b))
        return max(0.1, rng.expovariate(1.0 / self.a))

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g} s"
        if self.kind == "uniform":
            return f"uniform {self.a:g}-{self.b:g} s"
        if self.kind == "normal":
            return f"normal mean {self.a:g} s sd {self.b:g} s"
        return f"exponential mean {self.a:g} s"


@dataclass(frozen=True)
class Agent:
    """The Puppet agent's own schedule: a run every `interval`, first one after a splay."""

    interval: float
    splay: float
    duration: Duration


@dataclass(frozen=True)
class Resource:
    """A resource of a role's manifest: when it changes and what it notifies."""

    name: str
    changes: str  # once | always | never | until_converged | probability
    probability: float = 0.0
    start: float = 0.0  # `from`: no change before this time
    notify: tuple[str, ...] = ()
    collects: tuple[str, ...] = ()


@dataclass(frozen=True)
class Role:
    name: str
    agent: Agent
    resources: tuple[Resource, ...]


@dataclass(frozen=True)
class Trigger:
    name: str
    hosts: tuple[str, ...]  # every host it may reach, from the scenario's own role table
    ttl: int
    max_concurrent: int = 0  # `trigger fire --max-concurrent N` (serial: 1); 0 = no limit
    # The targets as `trigger fire --hosts` gets them: host names, and role:NAME
    # kept as such when discovery resolves roles through the store at fire time.
    targets: tuple[str, ...] = ()
    # `wait => true`: the notifying Puppet run waits, holding its lock, until every host the
    # fire reached has finished a run serving it, at most `wait_timeout` s (then it fails)
    wait: bool = False
    wait_timeout: float = WAIT_TIMEOUT

    @property
    def by_role(self) -> bool:
        return any(t.startswith("role:") for t in self.targets)


@dataclass(frozen=True)
class Discovery:
    """Watchers register as members under a lease; role:NAME resolves to the live ones."""

    member_ttl: int = MEMBER_TTL  # `trigger watch --member-ttl`


@dataclass(frozen=True)
class ExternalFire:
    """`trigger fire` run by hand or by CI at a given time, outside any Puppet run."""

    at: float
    trigger: str
    origin: str = ""


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str
    hosts: tuple[str, ...] = ()
    span: float | None = None  # `for`: None means until the end
    factor: float = 1.0
    delay: Duration | None = None  # latency: how long each store call takes
    step: float = 0.0  # clock_step: seconds the host's wall clock jumps (back if negative)

    def describe(self) -> str:
        parts = [self.kind]
        if self.hosts:
            parts.append(self.hosts[0] if len(self.hosts) == 1 else f"{len(self.hosts)} hosts")
        if self.kind == "slow_runs":
            parts.append(f"x{self.factor:g}")
        if self.kind == "clock_step":
            parts.append(f"{self.step:+g} s")
        if self.delay is not None:
            parts.append(self.delay.describe())
        if self.span:
            parts.append(f"for {self.span:g} s")
        elif self.span is None and self.kind not in INSTANT_FAULTS + ("restart_etcd", "kill_tsp"):
            parts.append("to the end")
        return " ".join(parts) + f" at {self.at:g} s"


@dataclass(frozen=True)
class WatcherSettings:
    """How the simulated `trigger watch` and `trigger run` behave; defaults are the real ones."""

    watch_latency: float = 0.002  # store write -> watch delivery (etcd on a LAN)
    check_interval: float = WATCH.check_interval  # re-read after this long without a delivery while busy
    idle_check: float = WATCH.idle_check  # ... and while idle
    reconnect_delay: float = WATCH.reconnect_delay  # first wait after a store error; doubles
    reconnect_max: float = WATCH.reconnect_max
    run_history: float = 7 * 24 * 3600.0  # finished run records expire (trigger run --retention)
    standby: bool = False  # trigger watch --standby (simulator/standby.py)
    standby_linger: float = STANDBY_LINGER  # trigger watch --standby-linger

    def policy(self) -> WatchPolicy:
        return WatchPolicy(self.check_interval, self.idle_check, self.reconnect_delay,
                           self.reconnect_max)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    until: float
    drain: float
    seed: int
    watcher: WatcherSettings
    nodes: tuple[tuple[str, str], ...]  # (host, role) in declaration order
    roles: dict[str, Role]
    triggers: dict[str, Trigger]
    fires: tuple[ExternalFire, ...] = ()
    faults: tuple[Fault, ...] = ()
    role_hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    discovery: Discovery | None = None  # None: role:NAME is the static role table


# -- name ranges -------------------------------------------------------------------

_RANGE = re.compile(r"\[(\d+):(\d+)\]")
MAX_NODES = 100_000  # a scenario larger than this is a typo, not a fleet
MAX_STEP = 10 * 365 * 86400.0  # a clock step of more than ten years is a typo


def expand_names(pattern: str) -> list[str]:
    """`web[001:003].example.com` -> web001, web002, web003 (width from the start).

    Several ranges in one name multiply; a name without brackets is itself.
    """
    match = _RANGE.search(pattern)
    if match is None:
        if "[" in pattern or "]" in pattern:
            raise ValueError(f"bad name range in {pattern!r}: use [START:END] with digits")
        return [pattern]
    start, end = match.group(1), match.group(2)
    if len(start) > 9 or len(end) > 9:
        raise ValueError(f"name range {match.group(0)} in {pattern!r} is too large")
    if int(end) < int(start):
        raise ValueError(f"name range {match.group(0)} in {pattern!r} ends before it starts")
    if range_size(pattern) > MAX_NODES:
        raise ValueError(f"{pattern!r} names more than {MAX_NODES:,} nodes")
    width = len(start)
    head, tail = pattern[: match.start()], pattern[match.end():]
    names = []
    for i in range(int(start), int(end) + 1):
        for rest in expand_names(tail):
            names.append(f"{head}{i:0{width}d}{rest}")
    return names


def range_size(pattern: str) -> int:
    """How many names a pattern expands to, without expanding it."""
    size = 1
    for start, end in _RANGE.findall(pattern):
        if len(start) > 9 or len(end) > 9:
            return MAX_NODES + 1
        size *= max(0, int(end) - int(start) + 1)
    return size


# -- parsing -----------------------------------------------------------------------


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key a mapping already has.

    Plain YAML keeps the last of two equal keys without a word: a scenario
    with `until:` twice, or two roles of one name, would simulate something
    else than its author reads. Keys a merge (`<<: *anchor`) brings in may
    still be overridden: that is what merging is for.
    """

    def construct_mapping(self, node, deep=False):
        first_seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = first_seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_scenario(source: str | Path | dict) -> Scenario:
    """A checked scenario from a YAML file, a YAML string, or an already-parsed dict."""
    if isinstance(source, dict):
        return parse_scenario(source, "scenario")
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except RecursionError:
        raise ScenarioError(f"{path}: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError(f"{path}: not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a mapping at the top, got {_kind(data)}")
    data.setdefault("name", path.stem)
    try:
        return parse_scenario(data, str(path))
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _fail(where: str, message: str):
    # One line, whatever the input held.
    text = f"{where}: {message}"
    raise ScenarioError(text.replace("\r", "\\r").replace("\n", "\\n"))


def _mapping(value: Any, where: str, allowed: tuple[str, ...] | None = None) -> dict:
    if not isinstance(value, dict):
        _fail(where, f"expected a mapping, got {_kind(value)}")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                _fail(f"{where}.{key}", f"unknown field; expected one of {', '.join(allowed)}")
    return value


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(where, f"expected a list, got {_kind(value)}")
    return value


def _number(value: Any, where: str, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1e15:
        _fail(where, "number out of range")  # str() of a huge int may itself fail
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(where, f"expected a number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        _fail(where, f"must be {'more than' if strict else 'at least'} {minimum:g}, got {value!r}")
    return float(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(where, f"expected a non-empty string, got {value!r}")
    return value


def _duration(value: Any, where: str) -> Duration:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Duration("fixed", _number(value, where, 0.0, strict=True))
    spec = _mapping(value, where, ("fixed", "uniform", "normal", "exponential"))
    if len(spec) != 1:
        _fail(where, "give exactly one of fixed, uniform, normal, exponential")
    (kind, args), = spec.items()
    at = f"{where}.{kind}"
    if kind in ("fixed", "exponential"):
        return Duration(kind, _number(args, at, 0.0, strict=True))
    if not isinstance(args, list) or len(args) != 2:
        _fail(at, f"expected [{'MIN, MAX' if kind == 'uniform' else 'MEAN, SD'}], got {args!r}")
    a, b = _number(args[0], f"{at}[0]"), _number(args[1], f"{at}[1]")
    if kind == "uniform" and not 0 < a <= b:
        _fail(at, f"expected 0 < MIN <= MAX, got {args!r}")
    if kind == "normal" and a <= 0:
        _fail(at, f"the mean must be more than 0, got {a:g}")
    return Duration(kind, a, b)


def _agent(value: Any, where: str, base: Agent) -> Agent:
    spec = _mapping(value, where, ("interval", "splay", "duration"))
    interval = _number(spec.get("interval", base.interval), f"{where}.interval", 0.0, strict=True)
    splay = _number(spec.get("splay", min(base.splay, interval)), f"{where}.splay")
    duration = _duration(spec["duration"], f"{where}.duration") if "duration" in spec else base.duration
    return Agent(interval, splay, duration)


def parse_scenario(data: dict, source: str = "scenario") -> Scenario:
    top = (
        "name", "description", "until", "drain", "seed", "watcher", "agent",
        "nodes", "roles", "triggers", "fires", "faults", "discovery",
    )
    _mapping(data, "scenario", top)
    for key in ("until", "nodes", "roles"):
        if key not in data:
            _fail(key, "missing (required)")
    name = _string(data.get("name", Path(source).stem), "name")
    description = data.get("description", "")
    if not isinstance(description, str):
        _fail("description", f"expected a string, got {_kind(description)}")
    until = _number(data["until"], "until", 0.0, strict=True)
    drain = _number(data.get("drain", 3600), "drain")
    seed = data.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        _fail("seed", f"expected an integer, got {seed!r}")

    w = _mapping(data.get("watcher", {}) or {}, "watcher", tuple(WatcherSettings.__dataclass_fields__))
    defaults = WatcherSettings()
    watcher = WatcherSettings(**{
        name: _number(w.get(name, getattr(defaults, name)), f"watcher.{name}", 0.0,
                      strict=name != "watch_latency")
        for name in WatcherSettings.__dataclass_fields__ if name != "standby"
    }, standby=w.get("standby", False))
    if not isinstance(watcher.standby, bool):
        _fail("watcher.standby", f"expected true or false, got {watcher.standby!r}")

    base = _agent(
        data.get("agent", {}), "agent",
        Agent(1800.0, 1800.0, Duration("uniform", 20.0, 40.0)),
    )

    # nodes: {NAME-PATTERN: ROLE}
    nodes_spec = _mapping(data["nodes"], "nodes")
    if not nodes_spec:
        _fail("nodes", "no nodes")
    nodes: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for pattern, role in nodes_spec.items():
        at = f"nodes.{pattern}"
        if not isinstance(pattern, str):
            _fail(at, f"expected a host name or range as the key, got {pattern!r}")
        role = _string(role, at)
        if len(nodes) + range_size(pattern) > MAX_NODES:
            _fail(at, f"the scenario names more than {MAX_NODES:,} nodes")
        try:
            names = expand_names(pattern)
            for host in names:
                check_host(host)
        except (ValueError, BadRecord) as exc:
            _fail(at, str(exc))
        for host in names:
            if host in seen:
                _fail(at, f"{host} is already declared (role {seen[host]})")
            seen[host] = role
            nodes.append((host, role))

    role_hosts: dict[str, list[str]] = {}
    for host, role in nodes:
        role_hosts.setdefault(role, []).append(host)

    discovery = None
    if data.get("discovery") is not None:
        d = _mapping(data["discovery"], "discovery", ("member_ttl",))
        member_ttl = d.get("member_ttl", MEMBER_TTL)
        if isinstance(member_ttl, bool) or not isinstance(member_ttl, int) or not 2 <= member_ttl <= 3600:
            _fail("discovery.member_ttl",
                  f"expected an integer from 2 to 3600 (seconds), got {member_ttl!r}")
        discovery = Discovery(member_ttl)
        for role in role_hosts:  # a member record names its roles as host-like names
            try:
                check_host(role)
            except BadRecord as exc:
                _fail(f"nodes: role {role!r}", f"not usable with discovery: {exc}")

    roles_spec = _mapping(data["roles"], "roles")
    for role in role_hosts:
        if role not in roles_spec:
            _fail("nodes", f"role {role!r} has no entry under roles")

    triggers_spec = _mapping(data.get("triggers", {}) or {}, "triggers")

    def resolve(value: Any, where: str, targets: list[str] | None = None) -> tuple[str, ...]:
        """The hosts named; `targets` collects them as `trigger fire --hosts` would get them."""
        items = value if isinstance(value, list) else [value]
        if not items:
            _fail(where, "no hosts")
        hosts: list[str] = []
        for i, item in enumerate(items):
            at = where if not isinstance(value, list) else f"{where}[{i}]"
            item = _string(item, at)
            if item == "all":
                hosts.extend(h for h, _ in nodes)
                if targets is not None:
                    targets.extend(h for h, _ in nodes)
            elif item.startswith("role:"):
                role = item[5:]
                if role not in role_hosts:
                    _fail(at, f"no node has role {role!r}")
                hosts.extend(role_hosts[role])
                if targets is not None:
                    targets.append(item)
            else:
                try:
                    names = expand_names(item)
                except ValueError as exc:
                    _fail(at, str(exc))
                for host in names:
                    if host not in seen:
                        _fail(at, f"{host} is not a node of this scenario")
                hosts.extend(names)
                if targets is not None:
                    targets.extend(names)
        return tuple(dict.fromkeys(hosts))

    triggers: dict[str, Trigger] = {}
    for tname, spec in triggers_spec.items():
        at = f"triggers.{tname}"
        if not isinstance(tname, str) or not tname or len(tname) > 256:
            _fail(at, "a trigger name must be 1 to 256 characters")
        spec = _mapping(spec, at, ("hosts", "ttl", "max_concurrent", "serial", "wait", "wait_timeout"))
        if "hosts" not in spec:
            _fail(f"{at}.hosts", "missing (required)")
        ttl = spec.get("ttl", 5)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL:
            _fail(f"{at}.ttl", f"expected an integer from 1 to {MAX_TTL}, got {ttl!r}")
        limit = spec.get("max_concurrent", 0)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
            _fail(f"{at}.max_concurrent", f"expected an integer from 0 to {MAX_LIMIT}, got {limit!r}")
        serial = spec.get("serial", False)
        if not isinstance(serial, bool):
            _fail(f"{at}.serial", f"expected true or false, got {serial!r}")
        if serial:
            if limit not in (0, 1):  # as `trigger fire`: serial means 1
                _fail(f"{at}.serial", f"serial means max_concurrent 1; max_concurrent is {limit}")
            limit = 1
        wait = spec.get("wait", False)
        if not isinstance(wait, bool):
            _fail(f"{at}.wait", f"expected true or false, got {wait!r}")
        wait_timeout = _number(spec.get("wait_timeout", WAIT_TIMEOUT), f"{at}.wait_timeout", 0.0,
                               strict=True)
        targets: list[str] = []
        hosts = resolve(spec["hosts"], f"{at}.hosts", targets)
        triggers[tname] = Trigger(tname, hosts, ttl, limit, tuple(dict.fromkeys(targets)), wait, wait_timeout)

    roles: dict[str, Role] = {}
    resource_names: set[str] = set()
    for rname, spec in roles_spec.items():
        at = f"roles.{rname}"
        spec = _mapping(spec if spec is not None else {}, at, ("agent", "resources"))
        agent = _agent(spec.get("agent", {}), f"{at}.agent", base)
        resources = []
        res_spec = _mapping(spec.get("resources", {}) or {}, f"{at}.resources")
        for res_name, rspec in res_spec.items():
            rat = f"{at}.resources.{res_name}"
            rspec = _mapping(rspec, rat, ("changes", "from", "notify", "collects"))
            resources.append(_resource(str(res_name), rspec, rat, triggers))
            resource_names.add(str(res_name))
        roles[rname] = Role(rname, agent, tuple(resources))
    for role in roles.values():
        for res in role.resources:
            for i, other in enumerate(res.collects):
                if other not in resource_names:
                    _fail(f"roles.{role.name}.resources.{res.name}.collects[{i}]",
                          f"no role declares a resource {other!r}")

    fires = []
    for i, spec in enumerate(_list(data.get("fires", []), "fires")):
        at = f"fires[{i}]"
        spec = _mapping(spec, at, ("at", "trigger", "from"))
        for key in ("at", "trigger"):
            if key not in spec:
                _fail(f"{at}.{key}", "missing (required)")
        trigger = _string(spec["trigger"], f"{at}.trigger")
        if trigger not in triggers:
            _fail(f"{at}.trigger", f"no trigger named {trigger!r}")
        origin = spec.get("from", "")
        if origin:
            origin = _string(origin, f"{at}.from")
            if origin not in seen:
                _fail(f"{at}.from", f"{origin} is not a node of this scenario")
        fires.append(ExternalFire(_number(spec["at"], f"{at}.at"), trigger, origin))

    faults = []
    for i, spec in enumerate(_list(data.get("faults", []), "faults")):
        at = f"faults[{i}]"
        spec = _mapping(spec, at, ("at", "kind", "hosts", "for", "factor", "delay", "step"))
        for key in ("at", "kind"):
            if key not in spec:
                _fail(f"{at}.{key}", "missing (required)")
        kind = spec["kind"]
        if kind not in FAULT_KINDS:
            _fail(f"{at}.kind", f"expected one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        hosts: tuple[str, ...] = ()
        if kind in NODE_FAULTS:
            if "hosts" not in spec:
                _fail(f"{at}.hosts", f"missing (required for {kind})")
            hosts = resolve(spec["hosts"], f"{at}.hosts")
        elif "hosts" in spec:
            _fail(f"{at}.hosts", f"{kind} affects etcd, not hosts; remove hosts")
        span = None
        if "for" in spec:
            if kind in INSTANT_FAULTS:
                _fail(f"{at}.for", f"{kind} happens at once; remove for")
            span = _number(spec["for"], f"{at}.for")
        elif kind == "restart_etcd":
            span = 0.0
        factor = 1.0
        if kind == "slow_runs":
            factor = _number(spec.get("factor", 2), f"{at}.factor", 0.0, strict=True)
        elif "factor" in spec:
            _fail(f"{at}.factor", "only slow_runs takes a factor")
        delay = None
        if kind == "latency":
            delay = _duration(spec.get("delay", {"uniform": [0.05, 0.5]}), f"{at}.delay")
        elif "delay" in spec:
            _fail(f"{at}.delay", "only latency takes a delay")
        step = 0.0
        if kind == "clock_step":
            if "step" not in spec:
                _fail(f"{at}.step", "missing (required for clock_step: seconds, negative steps back)")
            step = _number(spec["step"], f"{at}.step", -math.inf)
            if step == 0 or abs(step) > MAX_STEP:
                _fail(f"{at}.step", f"expected seconds from -{MAX_STEP:g} to {MAX_STEP:g}, not 0, "
                                    f"got {spec['step']!r}")
        elif "step" in spec:
            _fail(f"{at}.step", "only clock_step takes a step")
        if kind == "duplicate_watcher" and discovery is None:
            _fail(f"{at}.kind", "duplicate_watcher needs `discovery` (watchers claim their host "
                                "through member keys)")
        faults.append(Fault(_number(spec["at"], f"{at}.at"), kind, hosts, span, factor, delay, step))

    return Scenario(
        name=name, description=description, until=until, drain=drain, seed=seed,
        watcher=watcher, nodes=tuple(nodes), roles=roles, triggers=triggers,
        fires=tuple(sorted(fires, key=lambda f: f.at)),
        faults=tuple(faults),
        role_hosts={r: tuple(h) for r, h in role_hosts.items()},
        discovery=discovery,
    )


def _resource(name: str, spec: dict, where: str, triggers: dict[str, Trigger]) -> Resource:
    changes = spec.get("changes", "never")
    probability = 0.0
    if isinstance(changes, (int, float)) and not isinstance(changes, bool):
        probability = _number(changes, f"{where}.changes")
        if probability > 1:
            _fail(f"{where}.changes", f"a probability must be from 0 to 1, got {changes!r}")
        changes = "probability"
    elif changes not in CHANGES:
        _fail(f"{where}.changes",
              f"expected once, always, never, until_converged or a probability, got {changes!r}")
    notify = spec.get("notify", [])
    if isinstance(notify, str):
        notify = [notify]
    if not isinstance(notify, list):
        _fail(f"{where}.notify", f"expected a list of trigger names, got {_kind(notify)}")
    for i, tname in enumerate(notify):
        if not isinstance(tname, str) or tname not in triggers:
            _fail(f"{where}.notify[{i}]", f"no trigger named {tname!r} under triggers")
    collects = spec.get("collects", [])
    if isinstance(collects, str):
        collects = [collects]
    if not isinstance(collects, list) or not all(isinstance(c, str) for c in collects):
        _fail(f"{where}.collects", "expected a list of resource names")
    if changes == "until_converged" and not collects:
        _fail(f"{where}.collects", "until_converged needs the resources it collects")
    if collects and changes != "until_converged":
        _fail(f"{where}.collects", "only an until_converged resource collects")
    start = _number(spec.get("from", 0), f"{where}.from")
    return Resource(name, changes, probability, start, tuple(dict.fromkeys(notify)),
                    tuple(dict.fromkeys(collects)))
