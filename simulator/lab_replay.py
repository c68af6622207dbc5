"""`trigger-sim run SCENARIO --lab local`: the same scenario on real nodes, and the two outcomes side by side.

The simulation runs first; what it sampled for each node (when the Puppet
agent's turns came, how long each run took, which triggers each run
notified, in run order) becomes that node's plan. Then the local lab plays
the scenario on real nodes, `--time-scale K` times faster than simulated
time: a real etcd cluster, the real `trigger watch` on every node, real
task-spooler and `trigger run`, and as Puppet a stand-in
(simulator/lab_puppet.py) that takes Puppet's run lock, sleeps the plan's
duration and fires what the plan's run notified with the real `trigger
fire`. The driver here starts the scheduled runs, makes the scenario's
external fires and injects its faults at their (scaled) times; while every
node is idle and nothing is due it skips ahead to the next thing due, as
simulated time does.

What is compared, per node: runs (scheduled, triggered), fires received,
fires coalesced, fires refused by the ttl, fires left unserved, and per
limited trigger the most runs at once. Counts must be equal; the time each
node went quiet must agree within TOLERANCE_REAL seconds of real time
(times K in scenario seconds), because every hop costs the real programs
process start-ups that simulated time does not scale. A run that starts
late sleeps that much less (lab_puppet.py), so the lateness does not add
up along a chain; the report says how late the runs started. Counts agree
only where the scenario's closest events are further apart than that
lateness times K: pick K accordingly.

Scenario hosts map onto lab nodes in order (the first host is node1). The
watchers' own timers (member ttl 10 s, re-read every 5 s) run on real time.

The parts without IO (plans, the lab's table from what the nodes recorded,
the comparison, the input check) are functions, tested on their own; the
`LabReplay` class is the IO around them.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from trigger.layout import Layout

from .report import max_running
from .scenario import Scenario

LAB_FAULTS = ("kill_watcher", "slow_runs")  # what the driver can do to a local lab
LAB_MEMBER_TTL = 10  # `trigger watch --member-ttl` as the lab's watchers run it
TOLERANCE_REAL = 10.0  # seconds of real time two "quiet at" times may differ by
# seconds of real time a fire must keep from a run's start on its host for the
# lab to fold it the same way: about what a start-up chain costs under load
CLOSE_REAL = 2.0
STANDIN = Path(__file__).resolve().parent / "lab_puppet.py"
COUNTS = ("runs_scheduled", "runs_triggered", "fires_received", "fires_coalesced",
          "fires_refused", "unserved")


class LabInputError(ValueError):
    """A scenario the lab cannot play; the message is one line naming what."""


class LabReplayError(RuntimeError):
    """The lab did not do what the replay needed (etcd unanswering, a watcher not back)."""


def local_lab():
    """The `lab.local` module of the project's checkout, which the lab needs (its Puppet code,
    its node init): it lives next to simulator/ and is not installed with it."""
    import importlib
    import sys

    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "lab" / "local" / "__init__.py").exists():
        raise LabInputError(f"--lab needs the project's checkout: no lab/local in {checkout}")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    return importlib.import_module("lab.local")


def check_fits(scenario: Scenario, nodes: int) -> None:
    """Raise LabInputError before anything starts when the lab cannot take the scenario."""
    if len(scenario.nodes) > nodes:
        raise LabInputError(f"{scenario.name}: {len(scenario.nodes)} nodes, "
                            f"the local lab has at most {nodes}")
    for i, fault in enumerate(scenario.faults):
        if fault.kind not in LAB_FAULTS:
            raise LabInputError(f"{scenario.name}: faults[{i}]: the local lab cannot inject "
                                f"{fault.kind} (it can: {', '.join(LAB_FAULTS)})")
    if scenario.discovery is not None and scenario.discovery.member_ttl != LAB_MEMBER_TTL:
        raise LabInputError(f"{scenario.name}: discovery.member_ttl: the lab's watchers use "
                            f"{LAB_MEMBER_TTL}, not {scenario.discovery.member_ttl}")


def lab_names(scenario: Scenario) -> dict[str, str]:
    """Scenario host -> lab node, in order: the first host is node1."""
    return {host: f"node{i}" for i, (host, _) in enumerate(scenario.nodes, 1)}


# -- what the simulation sampled --------------------------------------------------------


@dataclass
class NodePlan:
    runs: list[tuple[float, tuple[str, ...], float]] = field(default_factory=list)  # duration, notified, start
    turns: list[float] = field(default_factory=list)  # the Puppet agent's scheduled turns


def plans(scenario: Scenario, puppet_runs) -> dict[str, NodePlan]:
    """Per host, from `Ledger.puppet_runs`: its runs in the order they ran, and its agent's turns."""
    out = {host: NodePlan() for host, _ in scenario.nodes}
    for host, kind, start, end, notified in sorted(puppet_runs, key=lambda r: r[2]):
        plan = out[host]
        if kind in ("scheduled", "skipped"):
            plan.turns.append(start)
        if kind != "skipped":
            plan.runs.append((end - start, tuple(notified), start))
    return out


# -- the table of either side ---------------------------------------------------------


def sim_table(report_data: dict) -> tuple[dict[str, dict], dict[str, int]]:
    """Per host the compared values, and per limited trigger the most runs at once."""
    rows = {n["host"]: {**{k: n[k] for k in COUNTS}, "quiescent_at": n["quiescent_at"]}
            for n in report_data["nodes"]}
    return rows, {limit["trigger"]: limit["max_running"] for limit in report_data["limits"]}


@dataclass
class LabRecords:
    """What the lab's nodes recorded, read back after the replay (lab node names)."""

    runs: dict[str, list[dict]]  # node -> the stand-in's runs.jsonl lines
    coalesced: dict[str, int]  # node -> "coalesce" decisions its watcher logged
    fires: list[dict]  # the fire records (P/fires/)
    refusals: list[dict]  # the refusal records (P/refused/)
    inbox_left: dict[str, int]  # node -> inbox entries left
    run_records: dict[str, list[dict]]  # node -> its run records


def coalesced_fires(watch_log: str) -> int:
    """Fires a watcher let join a queued run that then served them, from its log.

    The watcher logs `coalesce fire ID into queued run R` when a fire lands
    while R is queued. If R's `trigger run` read the inbox just before the
    fire landed (a race that simulated time, where a run starts in no time,
    never has), R does not serve it and the watcher queues another run for
    it (`enqueue run R2 for N fire(s): ID, ...`): that fire was not coalesced.
    """
    coalesced, enqueued = [], set()
    for line in watch_log.splitlines():
        if " coalesce fire " in line:
            coalesced.append(line.split(" coalesce fire ", 1)[1].split()[0])
        elif " enqueue run " in line and ": " in line:
            enqueued.update(i.strip() for i in line.rsplit(": ", 1)[1].split(","))
    return len(set(coalesced) - enqueued)


def lab_table(scenario: Scenario, records: LabRecords, scenario_time) -> tuple[dict[str, dict], dict[str, int]]:
    """The lab's table in the simulation's terms: scenario hosts, scenario seconds.

    `scenario_time(wall)` turns a node's clock reading into scenario time.
    """
    names = lab_names(scenario)
    host_of = {node: host for host, node in names.items()}
    received = {node: 0 for node in host_of}
    last_fire: dict[str, float] = {}
    for fire in records.fires:
        for node in fire["hosts"]:
            received[node] = received.get(node, 0) + 1
            last_fire[node] = max(last_fire.get(node, 0.0), fire["fired_at"])
    refused = {node: 0 for node in host_of}
    for refusal in records.refusals:
        if refusal["chain"]:
            refused[refusal["chain"][-1]] = refused.get(refusal["chain"][-1], 0) + 1
    rows = {}
    for node, host in host_of.items():
        runs = records.runs.get(node, [])
        triggered_ends = [r["end"] for r in runs if r["kind"] == "triggered"]
        left = records.inbox_left.get(node, 0)
        activity = [t for t in (*triggered_ends, last_fire.get(node)) if t is not None]
        rows[host] = {
            "runs_scheduled": sum(r["kind"] == "scheduled" for r in runs),
            "runs_triggered": len(triggered_ends),
            "fires_received": received.get(node, 0),
            "fires_coalesced": records.coalesced.get(node, 0),
            "fires_refused": refused.get(node, 0),
            "unserved": left,
            "quiescent_at": None if left or not activity else round(scenario_time(max(activity)), 3),
        }
    spans: dict[str, list[tuple[float, float]]] = {
        name: [] for name, t in scenario.triggers.items() if t.max_concurrent}
    for node, run_records in records.run_records.items():
        puppet = {r.get("run_id"): r for r in records.runs.get(node, []) if r["kind"] == "triggered"}
        for record in run_records:
            run = puppet.get(record["run_id"])
            for trigger, _limit in record.get("limits") or ():
                if run is not None:
                    spans.setdefault(trigger, []).append((run["start"], run["end"]))
    return rows, {name: max_running(s)[0] for name, s in spans.items()}


def lateness(records: LabRecords) -> str:
    """How much later than simulated the lab's runs started (real seconds), as a line for the report."""
    late = [r["late"] for runs in records.runs.values() for r in runs if "late" in r]
    if not late:
        return "no run on the lab"
    return (f"{len(late)} run(s) on the lab started {sum(late) / len(late):.2f} s (real) later than "
            f"simulated on average, at most {max(late):.2f} s; the stand-in shortened their sleep by that")


def close_calls(ledger, within: float, member_ttls: tuple[float, float] | None = None) -> list[str]:
    """The fires whose side of a run's start decides a count, landing within
    `within` scenario seconds of it, one line each. A fire that is its run's
    only one, landing just after the previous run began, would join that run
    if a little earlier; a fire folded into the last run, landing just before
    it began, would need a run of its own if a little later. Elsewhere a fire
    moving across a start changes which run serves it, not how many run. And
    two hosts asking for a slot of one trigger within `within` of each other
    race for it: the loser's runs wait, and their counts move with it.

    With `member_ttls` (scenario seconds a killed watcher's host stays a
    member in the simulation, and on the lab, whose member lease runs on real
    time), a fire landing while the two may disagree on the members of a role
    is one too: it targets that host on one side only."""
    runs: dict[str, dict[str, tuple[float, list[float]]]] = {}
    for (host, event_id), (run_id, started) in ledger.served_by.items():
        runs.setdefault(host, {}).setdefault(run_id, (started, []))[1].append(ledger.fired[(host, event_id)])
    calls = []
    for host in sorted(runs):
        ordered = sorted((started, sorted(fires)) for started, fires in runs[host].values())
        for i, (started, fires) in enumerate(ordered):
            if i and len(fires) == 1 and fires[0] - ordered[i - 1][0] < within:
                calls.append(f"{host}: the fire at {fires[0]:g} s, {fires[0] - ordered[i - 1][0]:.2f} s "
                             f"after a run began at {ordered[i - 1][0]:g} s, was the only one of the next run")
            if i == len(ordered) - 1:
                calls += [f"{host}: the fire at {f:g} s, {started - f:.2f} s before the last run began, "
                          f"was folded into it" for f in fires[1:] if started - f < within]
    for trigger, winner, asked, got in ledger.slot_asks:
        calls += [f"{host}: asked for a slot of {trigger!r} within {abs(other_asked - asked):.2f} s of "
                  f"{winner} at {asked:g} s and waited: which of them gets it first is a race"
                  for t, host, other_asked, other_got in ledger.slot_asks
                  if t == trigger and host != winner and other_got > got and abs(other_asked - asked) < within]
    if member_ttls is not None:
        fires = sorted(set(ledger.fired.values()))
        for fault, start, _end in ledger.fault_windows:
            if fault.kind != "kill_watcher":
                continue
            lo, hi = max(start, start + min(member_ttls) - within), start + max(member_ttls) + within
            calls += [f"{', '.join(fault.hosts)}: the fire at {t:g} s, {t - start:.2f} s after its watcher was "
                      f"killed, may find it a member on one side only" for t in fires if lo <= t <= hi]
    return calls


def lab_member_ttls(scenario: Scenario, scale: float) -> tuple[float, float] | None:
    """How long, in scenario seconds, a killed watcher's host stays a member in the
    simulation and on the lab at `scale`; None for a scenario without roles."""
    if scenario.discovery is None:
        return None
    return float(scenario.discovery.member_ttl), float(LAB_MEMBER_TTL * scale)


def compare(sim: tuple[dict, dict], lab: tuple[dict, dict], tolerance: float | None,
            outcomes=None, notes: list[str] | None = None) -> list[str]:
    """Every difference, one line each; empty when the two agree. With `tolerance`
    None the quiet times are not compared (real Puppet's runs take what they take).

    With `outcomes` (simulator.races.Outcomes), a count that differs from the
    simulation but lies within its range over the orders its races allow is
    no difference: it goes to `notes`, naming the race that decided it."""
    (sim_rows, sim_limits), (lab_rows, lab_limits) = sim, lab
    problems = []
    for host, s in sim_rows.items():
        lab_row = lab_rows.get(host)
        if lab_row is None:
            problems.append(f"{host}: not in the lab's table")
            continue
        for key in COUNTS:
            if s[key] != lab_row[key]:
                explained = outcomes.explain(host, key, lab_row[key]) if outcomes is not None else None
                if explained is not None:
                    if notes is not None:
                        notes.append(explained)
                    continue
                problems.append(f"{host}: {key} {s[key]} in the simulation, {lab_row[key]} on the lab"
                                + (f" (outside {outcomes.ranges[host][key][0]} to "
                                   f"{outcomes.ranges[host][key][1]} over {outcomes.orders} orders)"
                                   if outcomes is not None else ""))
        a, b = s["quiescent_at"], lab_row["quiescent_at"]
        if tolerance is not None and ((a is None) != (b is None) or (a is not None and abs(a - b) > tolerance)):
            problems.append(f"{host}: quiet at {_at(a)} in the simulation, {_at(b)} on the lab "
                            f"(tolerance {tolerance:g} s)")
    for trigger in sorted(set(sim_limits) | set(lab_limits)):
        a, b = sim_limits.get(trigger), lab_limits.get(trigger)
        if a != b:
            problems.append(f"limit {trigger!r}: most runs at once {a} in the simulation, {b} on the lab")
    return problems


def _at(value) -> str:
    return "-" if value is None else f"{value:g} s"


COLUMNS = (("runs\nsched", "runs_scheduled"), ("runs\ntrig", "runs_triggered"),
           ("fires\nrecv", "fires_received"), ("coal-\nesced", "fires_coalesced"),
           ("ttl\nrefused", "fires_refused"), ("un-\nserved", "unserved"),
           ("quiet\nat (s)", "quiescent_at"))


def render(console, title: str, scenario: Scenario, sim, lab, problems: list[str],
           tolerance: float | None, notes: tuple[str, ...] = ()) -> None:
    """The two per-node tables side by side, the limits, and each difference."""
    from rich import box
    from rich.table import Table

    names = lab_names(scenario)

    def table(caption: str, rows: dict, other: dict) -> Table:
        t = Table(title=caption, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
        t.add_column("node", no_wrap=True)
        for label, _ in COLUMNS:
            t.add_column(label, justify="right", no_wrap=True,
                         min_width=max(len(part) for part in label.split("\n")))
        for host, _ in scenario.nodes:
            row, mirror = rows[host], other[host]
            cells = [f"{host.split('.')[0]} ({names[host]})"]
            for _, key in COLUMNS:
                value = row[key]
                text = "-" if value is None else (f"{value:.1f}" if key == "quiescent_at" else str(value))
                differs = (value != mirror[key]) if key != "quiescent_at" else tolerance is not None and (
                    (value is None) != (mirror[key] is None)
                    or (value is not None and abs(value - mirror[key]) > tolerance))
                cells.append(f"[bold red]{text}[/]" if differs else text)
            t.add_row(*cells)
        return t

    tables = (table("simulation", sim[0], lab[0]), table("lab (real nodes)", lab[0], sim[0]))
    console.print(title, highlight=False)
    if console.width >= 2 * console.measure(tables[0]).maximum + 4:
        grid = Table.grid(padding=(0, 4))
        grid.add_row(*tables)
        console.print(grid)
    else:  # too narrow for side by side: one above the other
        for t in tables:
            console.print(t)
    for trigger in sorted(set(sim[1]) | set(lab[1])):
        console.print(f"  limit {trigger!r}: most runs at once {sim[1].get(trigger)} simulated, "
                      f"{lab[1].get(trigger)} on the lab", highlight=False)
    for note in notes:
        console.print(f"  {note}", highlight=False)
    if problems:
        for problem in problems:
            console.print(f"[bold red]differs:[/] {problem}", highlight=False)
    else:
        console.print("[green]agree[/]: every count equal" + (
            f", quiet times within {tolerance:g} s" if tolerance is not None else " (quiet times not compared)"),
            highlight=False)


# -- scenario time on the lab -------------------------------------------------------------


class Clock:
    """Scenario time on the lab: K scenario seconds per real second, plus the idle stretches skipped."""

    def __init__(self, scale: float, start: float):
        self.scale = scale
        self.anchors = [(start, 0.0)]  # (wall time, scenario time there)

    def at(self, wall: float) -> float:
        """The scenario time at a wall-clock reading (one taken during the replay)."""
        anchor = self.anchors[0]
        for candidate in self.anchors:
            if candidate[0] <= wall:
                anchor = candidate
        return anchor[1] + (wall - anchor[0]) * self.scale

    def wall(self, t: float) -> float:
        """When scenario time t comes, with no more skipping."""
        real, scenario = self.anchors[-1]
        return real + (t - scenario) / self.scale

    def skip_to(self, t: float, now: float) -> None:
        if t > self.at(now):
            self.anchors.append((now, t))


# -- the replay on a lab ------------------------------------------------------------------


@dataclass(order=True)
class _Due:
    at: float
    rank: int  # at one instant: faults, then fires, then the agents' turns (as the simulation orders them)
    seq: int
    what: str = field(compare=False)
    args: tuple = field(compare=False, default=())


class LabReplay:
    """One scenario played on a converged local lab whose watchers run the stand-in."""

    def __init__(self, lab, scenario: Scenario, puppet_runs, time_scale: float, seed: int):
        check_fits(scenario, len(lab.nodes))
        self.lab, self.scenario, self.scale = lab, scenario, time_scale
        self.names = lab_names(scenario)
        self.plans = plans(scenario, puppet_runs)
        self.layout = Layout()
        # In the lab's directory, which the nodes see at the same path (not one they overlay).
        self.dir = replay_dir(lab)
        self.session = self.dir / f"{scenario.name}-{seed}-{int(time.time())}"
        self._threads: list[threading.Thread] = []
        self._killed: dict[str, float] = {}  # node -> wall time its watcher was killed
        self.clock: Clock | None = None
        self.ended_busy = False

    # -- IO: the lab ------------------------------------------------------------

    def _etcdctl(self, *args: str) -> str:
        done = self.lab.run(self.lab.etcd_members[0], ["etcdctl", "--command-timeout=5s", *args], timeout=30)
        if done.returncode != 0:
            raise LabReplayError(f"etcdctl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def _get(self, prefix: str) -> list[tuple[str, bytes]]:
        data = json.loads(self._etcdctl("get", "--prefix", "-w", "json", prefix) or "{}")
        return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")))
                for kv in data.get("kvs", [])]

    def _plan_json(self, host: str | None, node: str) -> str:
        plan = self.plans[host] if host else NodePlan()
        durations = [d for d, _, _ in plan.runs] or [1.0]
        triggers = {name: {"hosts": self._targets(name), "ttl": t.ttl, "max_concurrent": t.max_concurrent}
                    for name, t in self.scenario.triggers.items()}
        return json.dumps({
            "state_dir": str(self.session / node),
            "runs": [[d / self.scale, list(n), start] for d, n, start in plan.runs],
            "default_duration": sum(durations) / len(durations) / self.scale,
            "triggers": triggers,
            "endpoints": ",".join(self.lab.endpoints(node)),
        })

    def prepare(self) -> None:
        """A clean slate: no records of an earlier replay, every watcher up, roles as the scenario's."""
        lab = self.lab
        self.session.mkdir(parents=True)
        for node in lab.nodes:
            if lab.service_status(node, "trigger-watch").get("state") != "running":
                lab.service(node, "trigger-watch", "start")
        for part in ("hosts/", "done/", "fires/", "refused/", "slots/", "quarantine/"):
            self._etcdctl("del", "--prefix", f"{self.layout.prefix}/{part}")
        roles = {}
        for host, role in self.scenario.nodes:
            roles[self.names[host]] = role if self.scenario.discovery is not None else None
        for node in lab.nodes:
            lab.run(node, ["mkdir", "-p", "/etc/trigger/roles"], check=True)
            lab.run(node, ["find", "/etc/trigger/roles", "-mindepth", "1", "-delete"], check=True)
            if roles.get(node):
                lab.put(node, f"/etc/trigger/roles/{roles[node]}", "")
            host = next((h for h, n in self.names.items() if n == node), None)
            (self.dir / f"{node}.json").write_text(self._plan_json(host, node))
        self._wait(lambda: self._members() == {n: r for n, r in roles.items() if r} or not any(roles.values()),
                   60, "the watchers did not register the scenario's roles")
        self._log_offsets = {node: self._watch_log(node).stat().st_size for node in lab.nodes}

    def _members(self) -> dict[str, str]:
        out = {}
        for key, value in self._get(self.layout.members_prefix()):
            record = json.loads(value)
            if record.get("roles"):
                out[key.rsplit("/", 1)[1]] = ",".join(record["roles"])
        return out

    def _watch_log(self, node: str) -> Path:
        return self.lab.node_dir(node) / "log" / "trigger-watch.log"

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise LabReplayError(f"after {timeout:g} s: {what}")
            time.sleep(0.2)

    def quiet(self) -> bool:
        """No scheduled run going, no fire waiting in an inbox (but a dead watcher's, which
        waits for its restart), no run queued or started."""
        if any(t.is_alive() for t in self._threads):
            return False
        for key, value in self._get(f"{self.layout.prefix}/hosts/"):
            rest = key[len(self.layout.prefix) + 7:]
            host = rest.split("/", 1)[0]
            kind, _ = self.layout.classify(host, key)
            if kind == "entry" and host not in self._killed:
                return False
            if kind == "run" and json.loads(value).get("state") in ("queued", "started"):
                return False
        return True

    def _background(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _scheduled_run(self, node: str) -> None:
        self.lab.run(node, [str(self.lab.venv / "bin" / "python"), str(STANDIN), str(self.dir)], timeout=600)

    def _write_clock(self) -> None:
        """Where the stand-ins read the scenario clock (it changes only while every node is idle)."""
        wall, at = self.clock.anchors[-1]
        tmp = self.dir / "clock.tmp"
        tmp.write_text(json.dumps({"wall": wall, "at": at, "scale": self.scale}))
        tmp.replace(self.dir / "clock.json")

    def _targets(self, trigger: str) -> list[str]:
        """`trigger fire --hosts` for the trigger on the lab: role:NAME with discovery, else its nodes."""
        t = self.scenario.triggers[trigger]
        if self.scenario.discovery is not None and t.by_role:
            return [x if x.startswith("role:") else self.names[x] for x in t.targets]
        return [self.names[h] for h in t.hosts]

    def _fire(self, trigger: str, origin: str) -> None:
        t = self.scenario.triggers[trigger]
        node = self.names[origin] if origin else self.lab.nodes[0]
        argv = [str(self.lab.venv / "bin" / "trigger"), "fire", "--hosts", ",".join(self._targets(trigger)),
                "--ttl", str(t.ttl), "--endpoints", ",".join(self.lab.endpoints(node))]
        if t.max_concurrent:
            argv += ["--max-concurrent", str(t.max_concurrent)]
        # An operator's fire comes from outside any node: its origin says so.
        self.lab.run(node, [*argv, "--", trigger], env={"TRIGGER_HOST": origin and node or "operator"})

    def _kill_watcher(self, node: str) -> None:
        """The process dies (SIGKILL: no goodbye to etcd, its member lease runs out), and stays down."""
        pid = self.lab.service_status(node, "trigger-watch").get("pid")
        if pid:
            self.lab.run(node, ["kill", "-s", "KILL", str(pid)])
        self.lab.service(node, "trigger-watch", "stop")
        self._killed[node] = time.time()

    def _restart_watcher(self, node: str) -> None:
        """Started again; the simulation's restart registers and reads the inbox at once, so wait for that."""
        log = self._watch_log(node)
        offset = log.stat().st_size
        self.lab.service(node, "trigger-watch", "start")
        self._wait(lambda: "in sync at revision" in log.read_text(errors="replace")[offset:], 30,
                   f"the restarted watcher of {node} did not read its inbox")
        if self.scenario.discovery is not None:
            self._wait(lambda: node in self._members(), 30, f"the restarted watcher of {node} did not register")
        del self._killed[node]

    # -- the play ---------------------------------------------------------------

    def _schedule(self) -> list[_Due]:
        due, seq = [], 0
        for i, fault in enumerate(self.scenario.faults):
            if fault.kind != "kill_watcher":
                continue  # slow_runs is in the plan's durations already
            for host in fault.hosts:
                due.append(_Due(fault.at, 0, seq := seq + 1, "kill", (self.names[host],)))
                if fault.span is not None:
                    due.append(_Due(fault.at + fault.span, 0, seq := seq + 1, "restart", (self.names[host],)))
        for fire in self.scenario.fires:
            due.append(_Due(fire.at, 1, seq := seq + 1, "fire", (fire.trigger, fire.origin)))
        for host, plan in self.plans.items():
            for turn in plan.turns:
                due.append(_Due(turn, 2, seq := seq + 1, "turn", (self.names[host],)))
        return sorted(due)

    def play(self) -> None:
        """Everything due, at its scaled time, then the drain until every node is quiet."""
        self.clock = clock = Clock(self.scale, time.time())
        self._write_clock()
        for item in self._schedule():
            self._until(item.at)
            if item.what == "turn":
                self._background(self._scheduled_run, *item.args)
            elif item.what == "fire":
                self._background(self._fire, *item.args)
            elif item.what == "kill":
                self._kill_watcher(*item.args)
            elif item.what == "restart":
                self._restart_watcher(*item.args)
        drain_end = time.time() + self.scenario.drain / self.scale
        self._until(self.scenario.until)
        while not self.quiet():
            if time.time() > drain_end:
                self.ended_busy = True
                break
            time.sleep(0.3)
        for thread in self._threads:
            thread.join()
        self.ended_at = clock.at(time.time())

    def _until(self, t: float) -> None:
        """Wait for scenario time t; skip the wait while every node is idle and no fault is open."""
        clock = self.clock
        while True:
            now = time.time()
            left = clock.wall(t) - now
            if left <= 0:
                return
            if left > 0.5 and self._may_skip(now) and self.quiet():
                clock.skip_to(t, time.time())
                self._write_clock()
                return
            time.sleep(min(left, 0.3))

    def _may_skip(self, now: float) -> bool:
        """Not while a killed watcher's member lease may still be alive: it ends on real time."""
        return all(now - killed > LAB_MEMBER_TTL + 1 for killed in self._killed.values())

    def collect(self) -> LabRecords:
        lab, layout = self.lab, self.layout
        runs, coalesced, inbox_left, run_records = {}, {}, {}, {}
        for node in lab.nodes:
            path = self.session / node / "runs.jsonl"
            text = path.read_text() if path.exists() else ""
            runs[node] = [json.loads(line) for line in text.splitlines() if line.strip()]
            with open(self._watch_log(node), "rb") as f:
                f.seek(self._log_offsets[node])
                log = f.read().decode(errors="replace")
            coalesced[node] = coalesced_fires(log)
            inbox_left[node], run_records[node] = 0, []
        for key, value in self._get(f"{layout.prefix}/hosts/"):
            host = key[len(layout.prefix) + 7:].split("/", 1)[0]
            kind, _ = layout.classify(host, key)
            if kind == "entry":
                inbox_left[host] = inbox_left.get(host, 0) + 1
            elif kind == "run":
                run_records.setdefault(host, []).append(json.loads(value))
        for key, value in self._get(layout.done_prefix()):  # finished runs moved out of hosts/
            where = layout.run_at(key)
            if where is not None:
                run_records.setdefault(where[0], []).append(json.loads(value))
        fires = [json.loads(v) for _, v in self._get(layout.fires_prefix())]
        refusals = [json.loads(v) for _, v in self._get(f"{layout.prefix}/refused/")]
        return LabRecords(runs, coalesced, fires, refusals, inbox_left, run_records)

    def run(self) -> tuple[dict, dict]:
        """Prepare, play, collect: the lab's table in scenario terms."""
        self.prepare()
        self.play()
        self.records = self.collect()
        return lab_table(self.scenario, self.records, self.clock.at)

    def notes(self) -> tuple[str, ...]:
        """What the report says about the replay itself, after `run`."""
        notes = [lateness(self.records)]
        if self.ended_busy:
            notes.append(f"the lab was still busy when the drain ({self.scenario.drain:g} s) ended")
        return tuple(notes)


def replay_dir(lab) -> Path:
    return lab.dir / "replay"


def run_command(lab) -> str:
    """The watchers' run command on a replay lab: the stand-in, reading its plan from the lab's directory."""
    return f"{lab.venv / 'bin' / 'python'} {STANDIN} {replay_dir(lab)}"


def replay(scenario: Scenario, simulation, time_scale: float, lab=None):
    """The lab's table for a simulated scenario, and notes on the replay; a lab of the
    scenario's size is made (and destroyed) when none is given."""
    def on(the_lab):
        player = LabReplay(the_lab, scenario, simulation.ledger.puppet_runs, time_scale, simulation.seed)
        return player.run(), player.notes()

    if lab is not None:
        return on(lab)
    with local_lab().claimed_lab("sim", nodes=max(3, len(scenario.nodes))) as the_lab:
        try:
            the_lab.destroy()
            the_lab.create()
            the_lab.converge(run_cmd=run_command(the_lab))
            return on(the_lab)
        finally:
            the_lab.destroy()
