"""A plan -> scenario YAML that `trigger-sim run` runs; no IO.

Catalogs say what notifies what; they cannot say when things change, how
long runs take or how often agents run. Those come from flags with stated
defaults (`Assumptions`), and the file written says which were used.

`--changes` (what changes when):

| value | the notifying resources ... |
|---|---|
| `release[@T][:GLOB]` (default `release@60`) | change once on the nodes matching GLOB (default: all), from T s; CI fires a run on those nodes at T (a trigger `release`); elsewhere they do not change |
| `converge[@T][:GLOB]` | as release; and on every other node that some trigger targets, they change until that node has caught up with the released resources (`until_converged`): the targets' own triggers pass the wave on |
| `always` | change on every run |
| `rate:P` | change on each run with probability P |
| `reports` (with `--puppetdb`) | change on each run with the rate PuppetDB's stored reports show for that resource on that node (runs with a change event / runs reported) |

An exec that is not refreshonly and has no onlyif/unless/creates changes on
every run whatever `--changes` says: Puppet runs it every time.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from dataclasses import dataclass, field

import yaml

from .analysis import Plan

RELEASE_TRIGGER = "release"


@dataclass(frozen=True)
class Changes:
    kind: str  # release | converge | always | rate | reports
    at: float = 60.0
    glob: str = "*"
    rate: float = 0.0
    # reports: (node, "Type[title]") -> the share of its reported runs in which it changed
    rates: dict = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        if self.kind in ("release", "converge"):
            return f"{self.kind}@{self.at:g}:{self.glob}"
        return f"rate:{self.rate:g}" if self.kind == "rate" else self.kind


_RELEASE = re.compile(r"^(release|converge)(?:@(\d+(?:\.\d+)?))?(?::(.+))?$")


def parse_changes(text: str) -> Changes:
    match = _RELEASE.match(text)
    if match:
        return Changes(match.group(1), float(match.group(2) or 60), match.group(3) or "*")
    if text in ("always", "reports"):
        return Changes(text)
    if text.startswith("rate:"):
        try:
            rate = float(text[5:])
        except ValueError:
            rate = -1.0
        if not 0 <= rate <= 1:
            raise ValueError(f"--changes {text}: the rate must be a probability from 0 to 1")
        return Changes("rate", rate=rate)
    raise ValueError(f"--changes {text!r}: expected release[@T][:GLOB], converge[@T][:GLOB], always, rate:P or reports")


def rates_from_reports(reported: dict[str, dict]) -> dict[tuple[str, str], float]:
    """PuppetDB's reports per node ({"runs": N, "changed": {"Type[title]": runs it changed in}})
    as the change rate of each resource on each node."""
    return {(node, ref): changed / seen["runs"] for node, seen in reported.items() if seen["runs"]
            for ref, changed in seen["changed"].items()}


@dataclass(frozen=True)
class Assumptions:
    """What catalogs cannot say, with the defaults `trigger-sim plan` states in its help."""

    changes: Changes = Changes("release")
    interval: float = 1800.0  # Puppet's runinterval default
    splay: float = 1800.0
    duration: str = "20-40"  # seconds: N, or MIN-MAX (uniform)
    until: float = 3600.0
    drain: float = 3600.0
    seed: int = 1


def duration_spec(text: str):
    try:
        if "-" in text:
            low, high = (float(x) for x in text.split("-", 1))
            if not 0 < low <= high:
                raise ValueError
            return {"uniform": [low, high]}
        value = float(text)
        if value <= 0:
            raise ValueError
        return value
    except ValueError:
        raise ValueError(f"--duration {text!r}: expected seconds (30) or a range (20-40)") from None


_DIGITS = re.compile(r"^(\D*)(\d+)(.*)$")


def compress(hosts: list[str]) -> list[str]:
    """web01, web02, web03, lb1 -> web[01:03], lb1: what scenario files read as ranges."""
    runs: list[list] = []  # [prefix, width, suffix, first, last]
    out: list[str] = []
    for host in sorted(hosts, key=_natural):
        m = _DIGITS.match(host)
        if m and runs and runs[-1][0] == m.group(1) and runs[-1][1] == len(m.group(2)) \
                and runs[-1][2] == m.group(3) and int(m.group(2)) == runs[-1][4] + 1:
            runs[-1][4] += 1
            continue
        if m:
            runs.append([m.group(1), len(m.group(2)), m.group(3), int(m.group(2)), int(m.group(2))])
        else:
            runs.append([host, 0, "", 0, 0])
    for prefix, width, suffix, first, last in runs:
        if not width:
            out.append(prefix)
        elif first == last:
            out.append(f"{prefix}{first:0{width}d}{suffix}")
        else:
            out.append(f"{prefix}[{first:0{width}d}:{last:0{width}d}]{suffix}")
    return out


def _natural(host: str):
    m = _DIGITS.match(host)
    return (m.group(1), len(m.group(2)), m.group(3), int(m.group(2))) if m else (host, 0, "", 0)


def variant_names(plan: Plan) -> dict[tuple[str, tuple], str]:
    """(trigger name, definition) -> its name in the scenario.

    A scenario has one definition per trigger name. Nodes that declare one
    name with different hosts (`poke peer` towards each node's own peer) are
    common and legitimate: the definition most nodes use keeps the name, each
    other one becomes `NAME #2`, `NAME #3`, ... so every node still reaches
    its own targets. Where the ttl, the limit or wait differ too, the plan has
    already warned (a limit's slots are per name; here each variant has its own).
    """
    out = {}
    for name, decls in plan.by_name().items():
        counts = Counter(d.definition() for d in decls)
        order = sorted(counts, key=lambda w: -counts[w])  # stable: first declared wins a tie
        for i, definition in enumerate(order):
            out[(name, definition)] = name if i == 0 else f"{name} #{i + 1}"
    return out


def build_scenario(plan: Plan, assume: Assumptions = Assumptions(), name: str = "plan") -> dict:
    changes = assume.changes
    released = {n for n in plan.nodes if fnmatch.fnmatchcase(n, changes.glob)}
    if changes.kind in ("release", "converge") and not released:
        raise ValueError(f"--changes {changes.describe()}: no node matches {changes.glob!r}")
    names = variant_names(plan)
    triggers: dict[str, dict] = {}
    for decl in plan.triggers:
        tname = names[(decl.name, decl.definition())]
        if tname in triggers or not decl.targets:
            continue  # no targets: nothing to run, and already a warning (they match no node)
        spec: dict = {"hosts": compress(list(decl.targets)), "ttl": decl.ttl}
        if decl.max_concurrent:
            spec["max_concurrent"] = decl.max_concurrent
        if decl.wait:
            spec.update(wait=True, wait_timeout=decl.wait_timeout)
        triggers[tname] = spec
    triggers = dict(sorted(triggers.items()))

    # Per node: resource -> the triggers its change fires.
    notifies: dict[str, dict[str, list[str]]] = {n: {} for n in plan.nodes}
    every_run: set[tuple[str, str]] = set()
    for decl in plan.triggers:
        tname = names[(decl.name, decl.definition())]
        if tname not in triggers:
            continue
        for n in decl.notifiers:
            if n.origin:
                notifies[decl.node].setdefault(n.resource, []).append(tname)
                if n.unconditional:
                    every_run.add((decl.node, n.resource))
    release_names = sorted({r for n in released for r in notifies[n]})
    targeted = {h for d in plan.triggers if d.notifiers for h in d.targets}

    def resource_spec(node: str, resource: str, fires: list[str]) -> dict:
        spec: dict = {}
        if (node, resource) in every_run or changes.kind == "always":
            spec["changes"] = "always"
        elif changes.kind == "rate":
            spec["changes"] = changes.rate
        elif changes.kind == "reports":
            spec["changes"] = round(changes.rates.get((node, resource), 0.0), 4)
        elif node in released:
            spec.update(changes="once", **({"from": changes.at} if changes.at else {}))
        elif changes.kind == "converge" and node in targeted and release_names:
            spec.update(changes="until_converged", collects=release_names)
        else:
            spec["changes"] = "never"
        spec["notify"] = sorted(set(fires))
        return spec

    signatures: dict[str, tuple] = {}
    resources_of: dict[str, dict] = {}
    for node in plan.nodes:
        resources = {r: resource_spec(node, r, f) for r, f in sorted(notifies[node].items())}
        resources_of[node] = resources
        signatures[node] = (plan.roles.get(node, ()), repr(resources))
    role_of: dict[str, str] = {}
    names: dict[tuple, str] = {}
    taken: set[str] = set()
    for node in sorted(plan.nodes, key=_natural):
        sig = signatures[node]
        if sig not in names:
            base = "+".join(plan.roles.get(node, ())) or _stem(node)
            role, i = base, 1
            while role in taken:
                i += 1
                role = f"{base}-{i}"
            names[sig] = role
            taken.add(role)
        role_of[node] = names[sig]

    roles: dict[str, dict] = {}
    for node in plan.nodes:
        role = role_of[node]
        if role not in roles:
            roles[role] = {"resources": resources_of[node]} if resources_of[node] else {}
    nodes: dict[str, str] = {}
    for role in sorted(roles):
        for pattern in compress([n for n in plan.nodes if role_of[n] == role]):
            nodes[pattern] = role

    scenario: dict = {
        "name": name,
        "description": f"generated by trigger-sim plan from {len(plan.nodes)} catalogs; "
                       f"changes {changes.describe()}",
        "until": assume.until, "drain": assume.drain, "seed": assume.seed,
        "agent": {"interval": assume.interval, "splay": min(assume.splay, assume.interval),
                  "duration": duration_spec(assume.duration)},
        "nodes": nodes,
        "roles": roles,
        "triggers": triggers,
    }
    if changes.kind in ("release", "converge"):
        release = RELEASE_TRIGGER
        while release in triggers:
            release += "'"
        triggers[release] = {"hosts": compress(sorted(released)), "ttl": 5}
        scenario["fires"] = [{"at": changes.at, "trigger": release}]
    return scenario


def _stem(host: str) -> str:
    """web01.example.com -> web: the name a group of alike hosts is known by."""
    label = host.split(".", 1)[0]
    return label.rstrip("0123456789-_") or label


def scenario_yaml(scenario: dict, plan: Plan, assume: Assumptions) -> str:
    """The scenario as YAML, headed by what it was made from and what was assumed."""
    differing = [w.message for w in plan.warnings if w.kind == "inconsistent_trigger"]
    lines = [
        "# Generated by `trigger-sim plan`. Readable and editable; run it with",
        f"#   trigger-sim run {scenario['name']}.yaml --check",
        "# What the catalogs could not say was assumed:",
        f"#   --changes {assume.changes.describe()}   --interval {assume.interval:g}   "
        f"--splay {assume.splay:g}   --duration {assume.duration}   --until {assume.until:g}",
        "# Alike hosts (the same notifying resources, the same trigger roles) share a role.",
        "# role:NAME targets are resolved from the catalogs' trigger::role / trigger::watch::etcd roles.",
    ]
    for message in differing:
        lines.append(f"# Declared differently on different nodes; each other declaration is NAME #2, ...: {message}")
    return "\n".join(lines) + "\n" + yaml.safe_dump(scenario, sort_keys=False, width=100,
                                                  allow_unicode=True)
