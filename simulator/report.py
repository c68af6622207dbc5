"""The outcome of a simulation: a JSON document, a terminal table, a verdict.

`Report.data` holds only what the simulation decided, rounded to the
millisecond, in a fixed order, so the same scenario and seed always give
the same bytes. Wall and CPU time and events per second describe the machine, not the
scenario; they live on the Report object and are printed, never written
into the JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from .simulation import Simulation

PER_NODE_ROWS = 40  # above this many nodes the table shows roles, and the busiest nodes


def _t(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class Report:
    data: dict
    events: int
    wall_seconds: float
    cpu_seconds: float = 0.0
    trace: list[tuple[float, str, str]] = field(default_factory=list)
    run_spans: list[tuple[int, float, float, bool]] = field(default_factory=list)
    hosts: list[tuple[str, str]] = field(default_factory=list)  # (host, role), in order
    # What the timeline marks besides runs, by node index:
    fires: list[tuple[float, int, float | None]] = field(default_factory=list)  # at, node, served run's start
    # A run that fired and the run its fire caused: fired at (the firing run's
    # end), the firing node, the target node, the caused run's start.
    causes: list[tuple[float, int, int, float]] = field(default_factory=list)
    refusals: list[tuple[float, int]] = field(default_factory=list)  # at, the refusing node
    slot_waits: list[tuple[int, float, float]] = field(default_factory=list)  # node, from, to

    @property
    def ok(self) -> bool:
        return self.data["check"]["ok"]

    @property
    def events_per_second(self) -> float:
        return self.events / self.wall_seconds if self.wall_seconds else 0.0

    def to_json(self) -> bytes:
        return (json.dumps(self.data, indent=1, sort_keys=False) + "\n").encode()


def executed_twice(spans) -> list[str]:
    """Run ids whose command began more than once, of (start, end, run id) spans."""
    seen: dict[str, int] = {}
    for _, _, run_id in spans:
        seen[run_id] = seen.get(run_id, 0) + 1
    return sorted(run_id for run_id, count in seen.items() if count > 1)


def max_running(spans) -> tuple[int, float | None]:
    """Most intervals open at once, and when that was first reached.

    A run that ends at the instant another starts does not overlap it.
    """
    edges = sorted([(end, 0) for start, end, *_ in spans] + [(start, 1) for start, end, *_ in spans])
    running = best = 0
    at = None
    for time, opens in edges:
        running += 1 if opens else -1
        if running > best:
            best, at = running, time
    return best, at


def limit_report(sim: Simulation) -> list[dict]:
    """Per limited trigger: the limit, how many of its runs ran at once, and the slot waits."""
    out = []
    limited = dict(sim.ledger.limits)
    for name, trigger in sim.scenario.triggers.items():
        if trigger.max_concurrent:
            limited.setdefault(name, trigger.max_concurrent)
    for name in sorted(limited):
        spans = sorted(sim.ledger.limited_spans.get(name, []))
        waits = sim.ledger.slot_waits.get(name, [])
        most, at = max_running(spans)
        out.append({
            "trigger": name,
            "max_concurrent": limited[name],
            "runs": len(spans),
            "max_running": most,
            "max_running_at": _t(at),
            "exceeded": most > limited[name],
            "slot_waits": len(waits),
            "slot_waited": {"total": _t(sum(waits)), "max": _t(max(waits, default=0.0)),
                            "mean": _t(sum(waits) / len(waits) if waits else 0.0)},
        })
    return out


def build_report(sim: Simulation) -> Report:
    scenario = sim.scenario
    remaining = sim.remaining_entries()
    unserved_by_host: dict[str, list] = {}
    for host, event_id, fired_at, trigger in remaining:
        unserved_by_host.setdefault(host, []).append((fired_at, event_id, trigger))
    remaining_keys = {(h, e) for h, e, _, _ in remaining}

    problems: list[str] = []
    unserved = []
    for host in sorted(unserved_by_host):
        entries = sorted(unserved_by_host[host])
        reason = sim.explain_unserved(host)
        unserved.append({
            "host": host, "count": len(entries), "first_fired_at": _t(entries[0][0]),
            "triggers": sorted({t for _, _, t in entries}),
            "event_ids": [e for _, e, _ in entries[:10]],
            "reason": reason or "no fault explains it",
        })
        if reason is None:
            problems.append(f"{len(entries)} fire(s) on {host} never followed by a run, "
                            "and no fault explains it")
    ledger = sim.ledger
    # Served means: a run that started after the fire ran its command to the end.
    not_served = sorted(
        key for key, fired_at in ledger.fired.items()
        if not any(started >= fired_at for started in ledger.completed.get(key, ()))
        and key not in remaining_keys)
    if not_served:
        host, event_id = not_served[0]
        problems.append(f"{len(not_served)} fire(s) left the inbox without a run that started after "
                        f"them and ran to its end, first {event_id} on {host}")
    for host, spans in sorted(ledger.commands.items()):
        most, at = max_running(spans)
        if most > 1:
            problems.append(f"{most} triggered runs at once on {host} at {at:g} s")
        twice = executed_twice(spans)
        if twice:  # a run id is carried out at most once, whatever restarts
            problems.append(f"{len(twice)} run(s) on {host} executed more than once, first {twice[0]}")
    if sim.still_busy:
        problems.append(
            f"triggered runs still going when the drain window closed at {sim.ended_at:g} s "
            f"({scenario.drain:g} s after the last scheduled run): an unbounded loop, "
            "or raise `drain`"
        )

    limits = limit_report(sim)
    for limit in limits:
        if limit["exceeded"]:
            problems.append(
                f"{limit['max_running']} runs of {limit['trigger']!r} at once at "
                f"{limit['max_running_at']:g} s, above its max_concurrent {limit['max_concurrent']}")

    refusals = sim.refusals()
    refused_by_chain: dict[tuple, dict] = {}
    refused_by_origin: Counter = Counter()
    for record in refusals:
        chain = tuple(record["chain"])
        if chain:
            refused_by_origin[chain[-1]] += 1
        key = (record["trigger"], chain)
        group = refused_by_chain.setdefault(key, {
            "trigger": record["trigger"], "chain": list(chain), "hop": record["hop"],
            "ttl": record["ttl"], "count": 0, "first_at": _t(record["refused_at"]),
        })
        group["count"] += 1
    refused = sorted(refused_by_chain.values(), key=lambda g: (-g["count"], g["first_at"], g["chain"]))

    nodes = []
    unserved_count = {u["host"]: u["count"] for u in unserved}
    for host, node in sim.nodes.items():
        s = node.stats
        left = unserved_count.get(host, 0)
        nodes.append({
            "host": host,
            "role": node.role.name,
            "runs_scheduled": s.scheduled_runs,
            "runs_triggered": s.triggered_runs,
            "scheduled_skipped": s.scheduled_skipped,
            "runs_aborted": s.runs_aborted,
            "runs_lost": s.runs_lost,
            "fires_received": s.fires_received,
            "fires_coalesced": s.fires_coalesced,
            "fires_sent": s.fires_sent,
            "fires_refused": refused_by_origin.get(host, 0),
            "fires_failed": s.fires_failed,
            "fires_no_target": s.fires_no_target,
            "waits_failed": s.waits_failed,
            "max_queue_depth": s.max_queue_depth,
            "unserved": left,
            "quiescent_at": None if left else _t(s.last_trigger_activity),
            "watch_errors": dict(s.watch_errors),
            "resyncs": s.resyncs,
        })

    def total(key):
        return sum(n[key] for n in nodes)

    quiet = [n["quiescent_at"] for n in nodes]
    quiescent_at = None if any(n["unserved"] for n in nodes) or sim.still_busy \
        else max((q for q in quiet if q is not None), default=None)
    totals = {
        "nodes": len(nodes),
        "runs_scheduled": total("runs_scheduled"),
        "runs_triggered": total("runs_triggered"),
        "scheduled_skipped": total("scheduled_skipped"),
        "runs_aborted": total("runs_aborted"),
        "runs_lost": total("runs_lost"),
        "fires_made": sim.fires_made,
        "fires_received": total("fires_received"),
        "fires_coalesced": total("fires_coalesced"),
        "fires_refused": len(refusals),
        "fires_failed": total("fires_failed"),
        "fires_no_target": sim.no_target_fires,
        "waits_failed": total("waits_failed"),
        "max_queue_depth": max(n["max_queue_depth"] for n in nodes),
        "unserved": total("unserved"),
        "first_fire_at": _t(sim.first_fire_at),
        "quiescent_at": quiescent_at,
        # from the first fire to the moment no node has anything left to do
        "time_to_quiescence": None if quiescent_at is None or sim.first_fire_at is None
        else _t(quiescent_at - sim.first_fire_at),
        "watch_errors": {
            k: sum(n["watch_errors"][k] for n in nodes) for k in ("unavailable", "compacted")
        },
        "resyncs": total("resyncs"),
    }

    data = {
        "scenario": scenario.name,
        "description": scenario.description,
        "seed": sim.seed,
        "until": scenario.until,
        "drain": scenario.drain,
        "ended_at": _t(sim.ended_at),
        "simulated_events": sim.events,
        "check": {"ok": not problems, "problems": problems},
        "totals": totals,
        "refused": refused,
        "unserved": unserved,
        "limits": limits,
        "faults": [
            {"at": f.at, "kind": f.kind, "hosts": list(f.hosts), "for": f.span,
             "factor": f.factor, "what": f.describe()}
            for f in scenario.faults
        ],
        "nodes": nodes,
    }
    index = {host: node.index for host, node in sim.nodes.items()}
    fires, causes = [], []
    for (host, event_id), fired_at in sorted(ledger.fired.items(), key=lambda item: item[1]):
        starts = [s for s in ledger.completed.get((host, event_id), ()) if s >= fired_at]
        served_at = min(starts) if starts else None
        fires.append((fired_at, index[host], served_at))
        origin = ledger.fired_by_run.get(event_id)
        if origin is not None and served_at is not None:
            causes.append((fired_at, origin, index[host], served_at))
    return Report(
        data=data, events=sim.events, wall_seconds=sim.wall_seconds, cpu_seconds=sim.cpu_seconds,
        trace=ledger.trace_lines,
        run_spans=ledger.run_spans, hosts=[(h, n.role.name) for h, n in sim.nodes.items()],
        fires=fires, causes=causes,
        refusals=[(r["refused_at"], index[r["chain"][-1]]) for r in refusals
                  if r.get("chain") and r["chain"][-1] in index],
        slot_waits=[(index[host], start, end) for host, start, end in ledger.slot_wait_spans],
    )


# -- the terminal table ----------------------------------------------------------------

COLUMNS = (
    ("runs\nsched", "runs_scheduled"),
    ("runs\ntrig", "runs_triggered"),
    ("fires\nrecv", "fires_received"),
    ("coal-\nesced", "fires_coalesced"),
    ("ttl\nrefused", "fires_refused"),
    ("max\nqueue", "max_queue_depth"),
    ("un-\nserved", "unserved"),
)


def _quiet(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _common_domain(hosts: list[str]) -> str:
    """The DNS suffix every host shares (`example.com`), to keep the table narrow."""
    parts = [h.split(".")[1:] for h in hosts]
    if not parts or not all(parts):
        return ""
    common = parts[0]
    for p in parts[1:]:
        while common and p[-len(common):] != common:
            common = common[1:]
    return ".".join(common)


def header(data: dict) -> str:
    """The report's first line. "last event" because the simulation stops at
    its last event once nothing is left to do, which may come before `until`
    when the agents have no run left in it: no run was cut short."""
    return (f"trigger-sim: {data['scenario']} (seed {data['seed']}, {len(data['nodes'])} nodes; "
            f"agents' schedule {data['until']:g} s, then a drain of up to {data['drain']:g} s; "
            f"last event at {data['ended_at']:.1f} s)")


class _WithoutTrailingSpaces:
    """A text stream that passes whole lines on with their trailing spaces
    removed (rich pads every line of a table to its width)."""

    def __init__(self, stream):
        self.stream = stream
        self.partial = ""

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        if lines:
            self.stream.write("".join(line.rstrip(" ") + "\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def console_for(stream=None):
    """A rich Console for the report. On a terminal, rich's own, fitted to
    it. Piped or redirected (a CI log, `grep`), lines are as long as they
    need, never folded at 80 columns mid-sentence, without colour codes or
    trailing spaces."""
    import sys

    from trigger.output import pipe_console

    stream = sys.stdout if stream is None else stream
    if stream.isatty():
        return pipe_console(file=stream)
    return pipe_console(file=_WithoutTrailingSpaces(stream), width=10_000, soft_wrap=True,
                   color_system=None, force_terminal=False)


def render(report: Report, console, all_nodes: bool = False) -> None:
    """Print the report as rich tables to `console`."""
    from rich import box
    from rich.table import Table

    data = report.data
    totals = data["totals"]
    nodes = data["nodes"]
    per_node = all_nodes or len(nodes) <= PER_NODE_ROWS
    domain = _common_domain([n["host"] for n in nodes])
    # Printed above the table, not as its title: a title folds to the table's width.
    console.print(header(data), highlight=False)
    if domain and per_node:
        console.print(f"hosts in {domain}", highlight=False)
    table = Table(show_footer=True, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    table.add_column("node" if per_node else "role (nodes)", footer="total", no_wrap=True)
    if per_node:
        table.add_column("role", no_wrap=True)
    for label, key in COLUMNS:
        table.add_column(label, justify="right", footer=str(totals[key]),
                         min_width=max(len(part) for part in label.split("\n")))
    quiet_total = totals["quiescent_at"]
    table.add_column("quiet\nat (s)", justify="right", min_width=7,
                     footer=_quiet(quiet_total) if quiet_total is not None or not totals["unserved"]
                     else "never")

    def row(first, extra, values, quiet):
        cells = [first, *extra]
        for _, key in COLUMNS:
            v = values[key]
            text = str(v)
            if key == "unserved" and v:
                text = f"[bold red]{v}[/]"
            elif key == "fires_refused" and v:
                text = f"[yellow]{v}[/]"
            cells.append(text)
        cells.append(quiet)
        table.add_row(*cells)

    if per_node:
        for n in nodes:
            host = n["host"][: -len(domain) - 1] if domain else n["host"]
            row(host, [n["role"]], n, _quiet(n["quiescent_at"]))
    else:
        roles: dict[str, list] = {}
        for n in nodes:
            roles.setdefault(n["role"], []).append(n)
        for role, members in roles.items():
            agg = {key: sum(m[key] for m in members) for _, key in COLUMNS}
            agg["max_queue_depth"] = max(m["max_queue_depth"] for m in members)
            qs = [m["quiescent_at"] for m in members]
            quiet = "never" if any(m["unserved"] for m in members) else _quiet(
                max((q for q in qs if q is not None), default=None))
            row(f"{role} ({len(members)})", [], agg, quiet)
    console.print(table)
    if not per_node:
        busiest = sorted((n for n in nodes if n["fires_received"]),
                         key=lambda n: (-n["fires_received"], -n["runs_triggered"], n["host"]))[:5]
        if busiest:
            console.print("most fired at: " + ", ".join(
                f"{n['host']} ({n['fires_received']} fires, {n['runs_triggered']} runs)"
                for n in busiest), highlight=False)

    extra = []
    if totals["time_to_quiescence"] is not None:
        extra.append(f"first fire at {totals['first_fire_at']:g} s; every node quiet "
                     f"{totals['time_to_quiescence']:.1f} s later")
    if totals["scheduled_skipped"]:
        extra.append(f"{totals['scheduled_skipped']} scheduled run(s) skipped (a run in progress)")
    if totals["runs_lost"]:
        extra.append(f"{totals['runs_lost']} queued run(s) marked lost and replaced")
    if totals["runs_aborted"]:
        extra.append(f"{totals['runs_aborted']} run(s) could not mark their start")
    if totals["fires_failed"]:
        extra.append(f"{totals['fires_failed']} fire(s) failed: etcd unreachable")
    if totals["fires_no_target"]:
        extra.append(f"{totals['fires_no_target']} fire(s) refused: their role had no live member")
    if totals["waits_failed"]:
        extra.append(f"{totals['waits_failed']} wait => true fire(s) failed: a target's run failed, "
                     f"or wait_timeout passed")
    we = totals["watch_errors"]
    if we["unavailable"] or we["compacted"]:
        extra.append(f"watch errors: {we['unavailable']} unavailable, {we['compacted']} compacted")
    for line in extra:
        console.print(f"  {line}")
    for fault in data["faults"]:
        console.print(f"  fault: {fault['what']}")
    for limit in data["limits"]:
        waited = limit["slot_waited"]
        color = "bold red" if limit["exceeded"] else "green"
        console.print(
            f"  limit {limit['trigger']!r}: max_concurrent {limit['max_concurrent']}, "
            f"[{color}]max running at once {limit['max_running']}[/] over {limit['runs']} run(s); "
            f"slot waits {limit['slot_waits']}, total {waited['total']:g} s, "
            f"max {waited['max']:g} s, mean {waited['mean']:g} s", highlight=False)
    for group in data["refused"][:10]:
        console.print(
            f"  [yellow]loop refused by ttl {group['ttl']}[/] x{group['count']}: "
            f"{group['trigger']!r} chain {' -> '.join(group['chain'])}"
        )
    if len(data["refused"]) > 10:
        console.print(f"  ... and {len(data['refused']) - 10} more refused chains (see report.json)")
    for u in data["unserved"][:10]:
        console.print(f"  [red]unserved[/] {u['count']} fire(s) on {u['host']}: {u['reason']}")
    if len(data["unserved"]) > 10:
        console.print(f"  ... and {len(data['unserved']) - 10} more hosts with unserved fires")
    unserved = sum(u["count"] for u in data["unserved"])
    if data["check"]["ok"] and unserved:
        console.print(f"[yellow]check: ok, but {unserved} fire(s) unserved[/], each explained by a "
                      "fault above that never healed; every other fire served by a run that ran "
                      "to its end, loops bounded" + (", limits kept" if data["limits"] else ""))
    elif data["check"]["ok"]:
        console.print("[green]check: ok[/] (every fire served by a run that started after it and "
                      "ran to its end, loops bounded" + (", limits kept)" if data["limits"] else ")"))
    else:
        for problem in data["check"]["problems"]:
            console.print(f"[bold red]check failed:[/] {problem}")
