"""The static plan as one JSON document, as terminal tables, and as CI findings."""

from __future__ import annotations

from .analysis import Plan

DEFAULT_STORM = 10  # `--fail-on storm`: more fires than this in one wave into one host


def plan_document(plan: Plan) -> dict:
    """Everything the plan found, in a fixed order (same catalogs, same bytes)."""
    by_name = plan.by_name()
    triggers = []
    for name in sorted(by_name):
        for decl in by_name[name]:
            triggers.append({
                "name": decl.name, "declared_on": decl.node, "hosts": list(decl.hosts),
                "targets": list(decl.targets), "ttl": decl.ttl, "limit": decl.max_concurrent,
                "wait": decl.wait, "file": decl.file, "line": decl.line,
                "notifiers": [{"host": n.node, "resource": n.resource, "file": n.file, "line": n.line,
                               "changes_by_itself": n.origin, "every_run": n.unconditional}
                              for n in decl.notifiers],
            })
    return {
        "nodes": [{"name": n, "roles": list(plan.roles[n])} for n in plan.nodes],
        "triggers": triggers,
        "loops": [{"hosts": list(lp.hosts), "triggers": list(lp.triggers), "shortest_cycle_hops": lp.shortest,
                   "ttl": lp.ttl, "rounds": lp.rounds, "every_run": lp.every_run, "wait_triggers": list(lp.waits)}
                  for lp in plan.loops],
        "fan_in": {host: plan.fan_in[host] for host in plan.nodes},
        "warnings": [{"kind": w.kind, "node": w.node or None, "trigger": w.trigger or None, "message": w.message}
                     for w in plan.warnings],
        "errors": list(plan.errors),
    }


def parse_fail_on(text: str | None) -> dict[str, int | None]:
    """`loop,storm:20,warning` -> {"loop": None, "storm": 20, "warning": None}; ValueError names the bad part."""
    out: dict[str, int | None] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        kind, _, arg = part.partition(":")
        if kind not in ("loop", "storm", "warning"):
            raise ValueError(f"--fail-on: unknown finding {kind!r}; expected loop, storm[:N] or warning")
        if arg and (kind != "storm" or not arg.isdigit()):
            raise ValueError(f"--fail-on: {part!r}: only storm takes a number (storm:N, N fires into one host)")
        out[kind] = int(arg) if arg else (DEFAULT_STORM if kind == "storm" else None)
    return out


def findings(plan: Plan, fail_on: dict[str, int | None]) -> list[str]:
    """One line per finding `--fail-on` asked about: what a failed pipeline prints."""
    out = []
    if "loop" in fail_on:
        for lp in plan.loops:
            out.append(f"loop: {_hosts(lp.hosts)} through {', '.join(lp.triggers)}: shortest cycle "
                       f"{lp.shortest} hop(s), stopped by ttl {lp.ttl} after {lp.rounds} round(s)"
                       + ("; starts on every Puppet run" if lp.every_run else ""))
    if "storm" in fail_on:
        limit = fail_on["storm"]
        for host in plan.nodes:
            if plan.fan_in[host] > limit:
                out.append(f"storm: one wave can bring {plan.fan_in[host]} fires into {host} (more than {limit})")
    if "warning" in fail_on:
        out.extend(f"warning: {w.message}" for w in plan.warnings)
    return out


def _hosts(hosts) -> str:
    return ", ".join(hosts[:4]) + (f" and {len(hosts) - 4} more" if len(hosts) > 4 else "")


def render(plan: Plan, console, rows: int = 40) -> None:
    """Tables: triggers, loops, the busiest fan-in, warnings."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    def row(table, *cells):  # resource references look like markup ([...]): never markup here
        table.add_row(*(escape(str(c)) for c in cells))

    console.print(f"trigger-sim plan: {len(plan.nodes)} nodes, {len(plan.by_name())} triggers, "
                  f"{len(plan.loops)} loop(s), {len(plan.warnings)} warning(s)", highlight=False)
    # Counts keep the table legible at 80 columns; -o json has every name.
    table = Table(box=box.SIMPLE_HEAD, title="triggers", title_justify="left")
    for col in ("trigger", "on nodes", "targets", "ttl", "limit", "notifiers"):
        table.add_column(col, justify="left" if col == "trigger" else "right", overflow="fold")
    for name, decls in sorted(plan.by_name().items()):
        targets = {t for d in decls for t in d.targets}
        leaves = {n.resource for d in decls for n in d.notifiers}
        row(table, name, len(decls), len(targets), "/".join(sorted({str(d.ttl) for d in decls})),
            "/".join(sorted({str(d.max_concurrent or "-") for d in decls})), len(leaves))
    console.print(table)
    if plan.loops:
        loops = Table(box=box.SIMPLE_HEAD, title="loops", title_justify="left")
        for col in ("hosts", "triggers", "cycle hops", "ttl", "rounds", "every run"):
            loops.add_column(col, overflow="fold")
        for lp in plan.loops:
            row(loops, _hosts(lp.hosts), ", ".join(lp.triggers), str(lp.shortest), str(lp.ttl),
                          str(lp.rounds), "yes" if lp.every_run else "no")
        console.print(loops)
    busiest = sorted((h for h in plan.nodes if plan.fan_in[h]), key=lambda h: (-plan.fan_in[h], h))[:rows]
    if busiest:
        fan = Table(box=box.SIMPLE_HEAD, title="fan-in (fires one wave brings)", title_justify="left")
        fan.add_column("host")
        fan.add_column("fires", justify="right")
        for host in busiest:
            row(fan, host, str(plan.fan_in[host]))
        console.print(fan)
    for w in plan.warnings:
        console.print(f"warning: {w.message}", highlight=False, markup=False)
    for line in plan.errors:
        console.print(f"error: {line}", highlight=False, markup=False)
