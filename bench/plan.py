"""`trigger-sim plan` (issue 22): importing a fleet's catalogs, compiling them, simulating the plan.

Three rows, each measured in a process of its own:

- import and analysis of 1,000 generated catalogs, a third in each shape
  (Puppet's catalog JSON, PuppetDB wire format v9, PuppetDB query API),
  read from files as `--catalogs DIR` reads them; target < 10 s;
- compiling the control repo's nodes in one Puppet process (what `--manifest`
  does) beside `puppet catalog compile` once per node, per node;
- the 1,000-node plan's scenario simulated for 24 h; target < 60 s.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import base_env
from .report import Row, verdict

ROOT = Path(__file__).resolve().parent.parent
REPO = ROOT / "examples" / "control-repo"
IMPORT_TARGET = 10.0
SIMULATE_TARGET = 60.0


def generate_catalog(i: int, nodes: int) -> dict:
    """Node i of a generated fleet: 2% load balancers (role lb), 1% db pairs that poke each other, webs.

    Each has ~40 resources in a few classes (containment edges as Puppet writes them) and
    one trigger, notified through a `~>` chain or a class-level notify.
    """
    lbs, dbs = max(2, nodes // 50), max(2, nodes // 100) // 2 * 2
    name = (f"lb{i + 1:03d}.example.com" if i < lbs else
            f"db{i - lbs + 1:03d}.example.com" if i < lbs + dbs else f"web{i - lbs - dbs + 1:04d}.example.com")
    res, edges = [], []

    def add(type_, title, parent, **params):
        res.append({"type": type_, "title": title, "tags": [type_.lower()], "file": "site.pp", "line": len(res) + 1,
                    "exported": False, "parameters": params})
        edges.append({"source": parent, "target": f"{type_}[{title}]"})

    res.append({"type": "Class", "title": "main", "tags": ["class"], "exported": False, "parameters": {}})
    for cls in ("Base", "Profile"):
        add("Class", cls, "Class[main]")
    for k in range(30):  # what every node has: packages, files, services
        add(("Package", "File", "Service")[k % 3], f"base-{k}", "Class[Base]")
    if i < lbs:
        add("Trigger::Role", "lb", "Class[Profile]")
        add("Trigger", "refresh monitoring", "Class[Profile]", hosts=[f"db{1:03d}.example.com"], ttl=5)
        add("Class", "Profile::Lb", "Class[Profile]", notify="Trigger[refresh monitoring]")
        for k in range(4):
            add("File", f"/etc/haproxy/{k}.cfg", "Class[Profile::Lb]")
    elif i < lbs + dbs:
        peer = i - lbs + 1 + (1 if (i - lbs) % 2 == 0 else -1)
        add("Trigger", "poke peer", "Class[Profile]", hosts=[f"db{peer:03d}.example.com"], ttl=3)
        add("Exec", "reindex", "Class[Profile]", command="/bin/true", refreshonly=True, notify=["Trigger[poke peer]"])
        add("File", "/etc/db.conf", "Class[Profile]", notify=["Exec[reindex]"])
    else:
        add("Trigger", "refresh load balancers", "Class[Profile]", hosts=["role:lb"], max_concurrent=2, ttl=5)
        add("File", "/etc/vhost.conf", "Class[Profile]", notify=["Exec[reload]"])
        add("Exec", "reload", "Class[Profile]", command="/bin/true", refreshonly=True,
            notify=["Trigger[refresh load balancers]"])
    for r in res:
        if r["type"] == "Trigger":
            edges.append({"source": f"Trigger[{r['title']}]", "target": f"Exec[trigger fire {r['title']}]"})
            res.append({"type": "Exec", "title": f"trigger fire {r['title']}", "tags": ["exec"], "exported": False,
                        "parameters": {"command": ["trigger", "fire", r["title"]], "refreshonly": True}})
            break
    return {"name": name, "version": 1, "catalog_format": 2, "environment": "production",
            "resources": res, "edges": edges}


def write_fleet(directory: Path, nodes: int) -> None:
    from simulator.plan.shapes import to_query, to_wire

    for i in range(nodes):
        doc = generate_catalog(i, nodes)
        shaped = (doc, to_wire(doc), to_query(to_wire(doc)))[i % 3]
        (directory / f"{doc['name']}.json").write_text(json.dumps(shaped))


def measure_import(nodes: int) -> dict:
    """In the worker: write the fleet, then time reading and analysing it."""
    from simulator.plan.analysis import analyse
    from simulator.plan.importers import load_catalog_dir

    with tempfile.TemporaryDirectory() as tmp:
        write_fleet(Path(tmp), nodes)
        t0 = time.perf_counter()
        fleet = load_catalog_dir(tmp)
        read = time.perf_counter() - t0
        plan = analyse(fleet.catalogs, fleet.errors)
        total = time.perf_counter() - t0
    return {"nodes": len(fleet.catalogs), "errors": len(fleet.errors), "read_s": read, "total_s": total,
            "loops": len(plan.loops), "warnings": len(plan.warnings), "max_fan_in": max(plan.fan_in.values())}


def measure_simulation(nodes: int, hours: float) -> dict:
    """In the worker: the generated fleet's plan, its scenario (a release on every node at 60 s), simulated."""
    from simulator import Simulation
    from simulator.plan.analysis import analyse
    from simulator.plan.importers import load_catalogs
    from simulator.plan.scenario_writer import Assumptions, build_scenario
    from simulator.report import build_report
    from simulator.scenario import parse_scenario

    plan = analyse(load_catalogs((str(i), generate_catalog(i, nodes)) for i in range(nodes)).catalogs)
    scenario = parse_scenario(build_scenario(plan, Assumptions(until=hours * 3600)), "plan")
    t0, c0 = time.perf_counter(), time.process_time()
    sim = Simulation(scenario).run()
    report = build_report(sim)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"nodes": len(scenario.nodes), "roles": len(scenario.roles), "wall_s": wall, "cpu_s": cpu,
            "events": sim.events,
            "ok": report.ok, "runs": report.data["totals"]}


def measure_compile() -> dict:
    """In the worker: the control repo compiled in one Puppet process, per node, and by `puppet catalog compile`."""
    from simulator.plan.compile import CompileOptions, compile_catalogs

    options = CompileOptions(REPO / "manifests" / "site.pp", REPO / "facts", f"{REPO / 'site'}:{ROOT / 'puppet'}",
                             REPO / "hiera.yaml")
    t0 = time.perf_counter()
    stamps = []
    for node, result in compile_catalogs(options):
        if isinstance(result, str):
            raise RuntimeError(result)
        stamps.append(time.perf_counter() - t0)
    one_process = {"nodes": len(stamps), "total_s": stamps[-1], "first_s": stamps[0],
                   "after_first_s": (stamps[-1] - stamps[0]) / (len(stamps) - 1)}
    separate = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "facts").mkdir()
        for node in ("web01.example.com", "lb01.example.com", "app01.example.com"):
            shutil.copy(REPO / "facts" / f"{node}.json", Path(tmp) / "facts")
            t = time.perf_counter()
            subprocess.run(["puppet", "catalog", "compile", node, "--facts_terminus", "json",
                            "--server_datadir", tmp, "--render-as", "json", "--log_level", "warning",
                            "--confdir", f"{tmp}/conf", "--vardir", f"{tmp}/var", "--codedir", f"{tmp}/code",
                            "--modulepath", f"{REPO / 'site'}:{ROOT / 'puppet'}",
                            "--hiera_config", str(REPO / "hiera.yaml"),
                            "--manifest", str(REPO / "manifests" / "site.pp")],
                           check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
            separate.append(time.perf_counter() - t)
    return {"one_process": one_process, "per_node_command_s": separate}


def _worker(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.plan", *args], env=base_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"plan worker failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run() -> tuple[list[Row], dict]:
    item = "22 plan"
    imported = _worker("import", "1000")
    rows = [Row(item, "import + analyse 1,000 catalogs (3 shapes, from files)", imported["total_s"], "s",
                target=f"< {IMPORT_TARGET:.0f} s", verdict=verdict(imported["total_s"] < IMPORT_TARGET),
                note=f"reading {imported['read_s']:.2f} s; {imported['loops']} loop(s), "
                     f"{imported['warnings']} warning(s), max fan-in {imported['max_fan_in']}")]
    details = {"import": imported}
    if shutil.which("puppet") and shutil.which("ruby"):
        compiled = _worker("compile", "-")
        one, separate = compiled["one_process"], compiled["per_node_command_s"]
        rows.append(Row(item, "compile a node: one Puppet process (after the first)", one["after_first_s"], "s",
                        statistics.median(separate), "`puppet catalog compile` per node (median of 3)",
                        note=f"{one['nodes']} nodes in {one['total_s']:.1f} s, first {one['first_s']:.1f} s"))
        details["compile"] = compiled
    else:
        rows.append(Row(item, "compile a node: one Puppet process", None, "s", note="puppet not installed"))
    simulated = _worker("simulate", "1000:24")
    rows.append(Row(item, "1,000-node plan simulated for 24 h", simulated["wall_s"], "s",
                    target=f"< {SIMULATE_TARGET:.0f} s", verdict=verdict(simulated["wall_s"] < SIMULATE_TARGET),
                    note=f"CPU {simulated['cpu_s']:.1f} s; {simulated['events']:,} events, {simulated['roles']} roles; "
                         f"check {'ok' if simulated['ok'] else 'FAILED'}"))
    details["simulate"] = simulated
    return rows, details


if __name__ == "__main__":
    what, arg = sys.argv[1], sys.argv[2]
    measure = {"import": lambda n: measure_import(int(n)),
               "simulate": lambda n: measure_simulation(int(n.split(":")[0]), float(n.split(":")[1])),
               "compile": lambda _: measure_compile()}[what]
    result = measure(arg)
    print(json.dumps(result))
