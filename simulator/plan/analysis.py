"""The fleet's trigger graph and what can go wrong in it; no IO.

Theory of operation. Within a node, Puppet refreshes a resource when one it
is subscribed to (or that notifies it) changes, and a refreshed resource
queues an event of its own, so `File ~> Exec(refreshonly) ~> Trigger` fires
the trigger when the file changes: refresh chains are transitive. A
relationship to or from a container (a class, a defined type's instance)
means every leaf resource inside it; a `Trigger[...]` is the one container
kept whole (it is what fires). So each node gives, per trigger it declares,
the leaves whose change fires it (its notifiers).

Across nodes, a trigger declared and notified on A with B among its
resolved targets makes an edge A -> B: a change on A can run Puppet on B.
A cycle of such edges is a loop if the resources on the way change on
triggered runs; only the ttl stops it. An `exec` that is not refreshonly
and has no onlyif/unless/creates changes on every run: a trigger it
notifies fires on every run.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from trigger.policy import WAIT_TIMEOUT

from .catalog import Catalog, Resource

DEFAULT_TTL = 5  # the defined type's defaults, for catalogs that omit them
CONDITIONS = ("refreshonly", "onlyif", "unless", "creates")


@dataclass(frozen=True)
class Notifier:
    """A leaf resource whose change fires a trigger on its node."""

    node: str
    resource: str
    file: str | None
    line: int | None
    origin: bool  # changes by itself (not only when refreshed: not a refreshonly exec, not a trigger)
    unconditional: bool  # an exec that runs, and so notifies, on every Puppet run


@dataclass
class TriggerDecl:
    """`trigger { NAME: }` as declared in one node's catalog."""

    name: str
    node: str
    hosts: tuple[str, ...]
    ttl: int
    max_concurrent: int
    wait: bool
    wait_timeout: int
    file: str | None
    line: int | None
    targets: tuple[str, ...] = ()  # resolved host names, in the order of `hosts`
    notifiers: list[Notifier] = field(default_factory=list)

    def definition(self) -> tuple:
        """How it is declared: nodes that declare one name differently fire it differently."""
        return (self.hosts, self.ttl, self.max_concurrent, self.wait)

    def behaviour(self) -> tuple:
        """What should agree across nodes. Hosts may differ (each node pokes its own peer)
        unless there is a limit: its slots are per trigger name, shared by every declaration."""
        return (self.hosts if self.max_concurrent else (), self.ttl, self.max_concurrent, self.wait)

    def describe(self) -> str:
        parts = [f"hosts {', '.join(self.hosts)}", f"ttl {self.ttl}"]
        if self.max_concurrent:
            parts.append(f"max_concurrent {self.max_concurrent}")
        if self.wait:
            parts.append("wait")
        return " ".join(parts)


@dataclass(frozen=True)
class Loop:
    hosts: tuple[str, ...]
    triggers: tuple[str, ...]
    shortest: int  # hops of the shortest cycle
    ttl: int  # the smallest ttl on the cycle: the hop above it is refused
    rounds: int  # whole cycles a chain goes before the ttl stops it
    every_run: bool  # an unconditional exec notifies on the way: it starts on every Puppet run
    waits: tuple[str, ...] = ()  # triggers with wait => true on the cycle


@dataclass(frozen=True)
class Warning:
    kind: str
    message: str
    node: str = ""
    trigger: str = ""


WARNING_KINDS = ("unknown_target", "unknown_role", "inconsistent_trigger", "unnotified_trigger",
                 "targets_own_host", "wait_on_cycle", "unconditional_exec")


@dataclass
class Plan:
    nodes: list[str]
    roles: dict[str, tuple[str, ...]]  # node -> trigger roles (trigger::role, trigger::watch::etcd)
    triggers: list[TriggerDecl]
    loops: list[Loop]
    fan_in: dict[str, int]  # host -> fires one wave can bring (declarations targeting it)
    warnings: list[Warning]
    errors: list[str] = field(default_factory=list)  # input that could not be read, one line each

    def by_name(self) -> dict[str, list[TriggerDecl]]:
        out: dict[str, list[TriggerDecl]] = {}
        for decl in self.triggers:
            out.setdefault(decl.name, []).append(decl)
        return out


# -- within a node ---------------------------------------------------------------------


def _truthy(value) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _conditional(res: Resource) -> bool:
    p = res.parameters
    return _truthy(p.get("refreshonly")) or any(p.get(k) not in (None, "", []) for k in CONDITIONS[1:])


def node_roles(catalog: Catalog) -> tuple[str, ...]:
    roles = []
    for res in catalog.resources.values():
        if res.type == "Trigger::Role" and res.parameters.get("ensure", "present") == "present":
            roles.append(str(res.parameters.get("role", res.title)))
        elif res.type == "Class" and res.title == "Trigger::Watch::Etcd":
            value = res.parameters.get("roles") or []
            roles.extend(str(r) for r in (value if isinstance(value, list) else [value]))
    return tuple(dict.fromkeys(roles))


def _leaves(catalog: Catalog) -> dict[str, tuple[str, ...]]:
    """Every reference -> the leaf resources it stands for (a Trigger stands for itself)."""
    memo: dict[str, tuple[str, ...]] = {}

    def leaves(r: str, depth: int = 0) -> tuple[str, ...]:
        # containment is a tree a few levels deep (stage, class, define, ...); the
        # depth bound only guards against a malformed catalog with a containment cycle
        if r not in memo:
            children = () if r.startswith("Trigger[") or depth > 100 else catalog.contains.get(r, ())
            memo[r] = (r,) if not children else tuple(dict.fromkeys(
                x for c in children for x in leaves(c, depth + 1)))
        return memo[r]

    return {r: leaves(r) for r in set(catalog.resources) | {s for s, _ in catalog.refreshes}
            | {t for _, t in catalog.refreshes}}


class BadTrigger(ValueError):
    """A trigger's parameter the plan cannot read; the message names the resource."""


def _integer(res: Resource, name: str, default: int) -> int:
    value = res.parameters.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadTrigger(f"{res.ref}: {name} is {value!r}, not a number") from None


def node_triggers(catalog: Catalog) -> list[TriggerDecl]:
    """The triggers a node declares, each with the leaves whose change fires it."""
    leaves = _leaves(catalog)
    refreshed_by: dict[str, set[str]] = {}  # leaf -> leaves whose change refreshes it
    for src, dst in catalog.refreshes:
        for b in leaves.get(dst, (dst,)):
            refreshed_by.setdefault(b, set()).update(a for a in leaves.get(src, (src,)) if a != b)
    decls = []
    for res in catalog.resources.values():
        if res.type != "Trigger" or res.exported:
            continue
        p = res.parameters
        hosts = p.get("hosts") or []
        hosts = tuple(str(h) for h in (hosts if isinstance(hosts, list) else [hosts]))
        limit = 1 if _truthy(p.get("serial")) else _integer(res, "max_concurrent", 0)
        decl = TriggerDecl(res.title, catalog.node, hosts, _integer(res, "ttl", DEFAULT_TTL), limit,
                           _truthy(p.get("wait")), _integer(res, "wait_timeout", int(WAIT_TIMEOUT)),
                           res.file, res.line)
        seen, queue = {res.ref}, deque([res.ref])
        while queue:  # backwards along refresh chains: everything whose change reaches the trigger
            for a in sorted(refreshed_by.get(queue.popleft(), ())):
                if a in seen:
                    continue
                seen.add(a)
                queue.append(a)
                leaf = catalog.resources.get(a)
                if leaf is None or leaf.exported:  # exported: applied where collected, not here
                    continue
                is_exec = leaf.type == "Exec"
                origin = leaf.type != "Trigger" and not (is_exec and _truthy(leaf.parameters.get("refreshonly")))
                decl.notifiers.append(Notifier(catalog.node, a, leaf.file, leaf.line, origin,
                                               is_exec and not _conditional(leaf)))
        decls.append(decl)
    return sorted(decls, key=lambda d: d.name)


# -- across the fleet --------------------------------------------------------------------


def analyse(catalogs: list[Catalog], errors: list[str] | None = None) -> Plan:
    nodes = [c.node for c in catalogs]
    known = set(nodes)
    roles = {c.node: node_roles(c) for c in catalogs}
    members: dict[str, list[str]] = {}
    for node in nodes:
        for role in roles[node]:
            members.setdefault(role, []).append(node)
    warnings: list[Warning] = []
    decls: list[TriggerDecl] = []
    errors = list(errors or [])
    for catalog in catalogs:
        try:
            node_decls = node_triggers(catalog)
        except BadTrigger as exc:  # this node's triggers are left out; the rest is planned
            errors.append(f"{catalog.source}: {catalog.node}: {exc}")
            continue
        for decl in node_decls:
            targets = []
            for host in decl.hosts:
                if host.startswith("role:"):
                    if host[5:] not in members:
                        warnings.append(Warning("unknown_role", f"{decl.node}: trigger {decl.name!r} targets "
                                                f"{host}, a role no node has", decl.node, decl.name))
                    targets.extend(members.get(host[5:], ()))
                elif host in known:
                    targets.append(host)
                else:
                    warnings.append(Warning("unknown_target", f"{decl.node}: trigger {decl.name!r} targets "
                                            f"{host}, which matches no node", decl.node, decl.name))
            decl.targets = tuple(dict.fromkeys(targets))
            if catalog.node in decl.targets:
                warnings.append(Warning("targets_own_host", f"{decl.node}: trigger {decl.name!r} targets "
                                        f"its own host", decl.node, decl.name))
            if not decl.notifiers:
                warnings.append(Warning("unnotified_trigger", f"{decl.node}: nothing notifies trigger "
                                        f"{decl.name!r}", decl.node, decl.name))
            for n in decl.notifiers:
                if n.unconditional:
                    warnings.append(Warning(
                        "unconditional_exec",
                        f"{decl.node}: {n.resource} ({_where(n)}) has no refreshonly, onlyif, unless or "
                        f"creates and notifies trigger {decl.name!r}: it fires on every Puppet run",
                        decl.node, decl.name))
            decls.append(decl)

    by_name: dict[str, list[TriggerDecl]] = {}
    for decl in decls:
        by_name.setdefault(decl.name, []).append(decl)
    for name, group in sorted(by_name.items()):
        ways: dict[tuple, list[str]] = {}
        for decl in group:
            ways.setdefault(decl.behaviour(), []).append(decl.node)
        if len(ways) > 1:
            described = "; ".join(
                f"{next(d for d in group if d.behaviour() == w).describe()} on {len(n)} node(s) "
                f"({n[0]}{', ...' if len(n) > 1 else ''})" for w, n in ways.items())
            warnings.append(Warning("inconsistent_trigger", f"trigger {name!r} is declared {len(ways)} ways "
                                    f"(its limit's slots are per name): {described}", trigger=name))

    loops = find_loops(decls)
    for loop in loops:
        for name in loop.waits:
            warnings.append(Warning("wait_on_cycle", f"trigger {name!r} has wait => true on a loop through "
                                    f"{_hosts(loop.hosts)}: each run waits for the other until its "
                                    f"wait_timeout", trigger=name))
    fan_in: dict[str, int] = dict.fromkeys(nodes, 0)
    for decl in decls:
        if decl.notifiers:
            for host in decl.targets:
                fan_in[host] += 1
    return Plan(nodes, roles, decls, loops, fan_in, warnings, errors)


def _where(n: Notifier) -> str:
    return f"{n.file}:{n.line}" if n.file else "no file"


def _hosts(hosts) -> str:
    return ", ".join(hosts[:3]) + (f" and {len(hosts) - 3} more" if len(hosts) > 3 else "")


def find_loops(decls: list[TriggerDecl]) -> list[Loop]:
    """Cycles of the host graph, one `Loop` per strongly connected component that has one."""
    edges: dict[str, dict[str, list[TriggerDecl]]] = {}
    for decl in decls:
        if decl.notifiers:
            out = edges.setdefault(decl.node, {})
            for host in decl.targets:
                out.setdefault(host, []).append(decl)
    loops = []
    for component in _components(edges):
        inside = set(component)
        via = [d for a in component for b, ds in edges.get(a, {}).items() if b in inside for d in ds]
        if len(component) == 1 and component[0] not in edges.get(component[0], {}):
            continue  # a single node with no edge to itself: no cycle
        shortest = _girth(component, edges)
        ttl = min(d.ttl for d in via)
        loops.append(Loop(
            hosts=tuple(sorted(component)), triggers=tuple(sorted({d.name for d in via})),
            shortest=shortest, ttl=ttl, rounds=ttl // shortest,
            every_run=any(n.unconditional for d in via for n in d.notifiers),
            waits=tuple(sorted({d.name for d in via if d.wait})),
        ))
    return sorted(loops, key=lambda lp: (lp.shortest, lp.hosts))


def _components(edges: dict[str, dict[str, list]]) -> list[list[str]]:
    """Strongly connected components (Tarjan's, iterative: fleets are deep enough to overflow recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    vertices = sorted(set(edges) | {b for targets in edges.values() for b in targets})
    for root in vertices:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, {}))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            advanced = False
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, {})))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                out.append(component)
    return out


def _girth(component: list[str], edges) -> int:
    """Hops of the shortest cycle within a component: BFS from each host back to itself."""
    inside = set(component)
    if any(v in edges.get(v, {}) for v in component):
        return 1
    best = len(component)
    for start in component:
        dist = {start: 0}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            if dist[v] + 1 >= best:
                break
            for w in edges.get(v, {}):
                if w == start:
                    best = min(best, dist[v] + 1)
                elif w in inside and w not in dist:
                    dist[w] = dist[v] + 1
                    queue.append(w)
        if best == 2:
            break  # the shortest cycle there is without a self-edge
    return best
