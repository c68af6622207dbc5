"""A plan shown on real Puppet: its control repo converged on the local lab, one release made, counted.

`trigger-sim plan` predicts what a release does to a fleet from its
catalogs. Here the same control repo runs on the local lab with real
Puppet, and the per-node counts of that release (runs, fires received,
coalesced, refused by the ttl, unserved) are read back in the simulation's
terms, to be compared with the plan's simulation of the release
(`lab_replay.compare`, with the outcome ranges of `races`).

Fleet host *i* of the scenario is lab node `node`*i*, whose watcher serves
the fleet's name (`LocalLab.converge(watch_hosts=...)`), so the catalogs'
literal targets and `role:NAME` targets reach it. The watchers' run command
is lab_apply.py: `puppet apply` of a copy of the control repo as that node.

1. converge: an operator's fire at every node, as after provisioning
   (the nodes with roles first, so that a `role:NAME` fire of another
   node's first run finds them); the first runs change everything and fire
   what they notify (the loop goes round until its ttl refuses it). Wait
   until every node is quiet.
2. release: the records of the converge are cleared; hiera key `release`
   is set to a new value in data/nodes/NODE.yaml of the released nodes
   only (what `--changes release[@T]:GLOB` says changes), then the release
   trigger is fired at them as the scenario fires it. Wait until quiet.
3. count, as `LabReplay.collect` does, with the fleet's names mapped back
   to lab nodes.

Scheduled agent runs are not played: the scenario is expected to have none
in its window (a long --interval and --splay); a simulated one would show
as a difference. Quiet times are reported, not compared: real runs take
what they take, not the plan's assumed durations.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import yaml

from ..lab_replay import LabInputError, LabReplay, LabReplayError, lab_names, lab_table
from ..scenario import Scenario

APPLY = Path(__file__).with_name("lab_apply.py")
RELEASE_KEY = "release"  # the hiera key the control repo's release follows (data/common.yaml)
CONVERGE = "converge"  # the operator's fire that makes every node's first run


def apply_dir(lab) -> Path:
    """Where the nodes find their part (NODE.json) and the copy of the control repo: in the
    lab's directory, which every node sees at the same path."""
    return lab.dir / "puppet-apply"


def run_command(lab) -> str:
    """The watchers' run command: real Puppet through lab_apply.py."""
    return f"{lab.venv / 'bin' / 'python'} {APPLY} {apply_dir(lab)}"


def watch_hosts(scenario: Scenario) -> dict[str, str]:
    """Lab node -> the fleet host its watcher serves."""
    return {node: host for host, node in lab_names(scenario).items()}


def release_data(text: str | None, value: str) -> str:
    """A node's hiera data (YAML text, or None for no file) with the release key set to `value`."""
    data = yaml.safe_load(text) if text else None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LabInputError(f"hiera data must be a mapping, got {type(data).__name__}")
    data[RELEASE_KEY] = value
    return "---\n" + yaml.safe_dump(data, sort_keys=False)


class ControlRepoRelease(LabReplay):
    """One release of a control repo on a local lab converged with `run_command(lab)` and
    `watch_hosts(scenario)`, for the plan's scenario of that release."""

    def __init__(self, lab, scenario: Scenario, repo: Path, modulepath: str, members: dict[str, tuple],
                 value: str = "r2", timeout: float = 600):
        super().__init__(lab, scenario, [], 1.0, 0)
        if len(scenario.fires) != 1 or scenario.fires[0].origin:
            raise LabInputError(f"{scenario.name}: a release is one operator fire "
                                f"(trigger-sim plan --changes release@T:GLOB), not {len(scenario.fires)} fire(s)")
        self.release = scenario.fires[0]
        self.released = list(scenario.triggers[self.release.trigger].hosts)
        self.repo, self.modulepath, self.value, self.timeout = repo, modulepath, value, timeout
        self.members = {host: ",".join(roles) for host, roles in members.items() if roles}
        self.work = apply_dir(lab)
        self.copy = self.work / "control-repo"
        self.phases: dict[str, dict] = {}

    # -- what differs from a stand-in replay ------------------------------------

    def _targets(self, trigger: str) -> list[str]:
        return list(self.scenario.triggers[trigger].hosts)  # the fleet's own names: the watchers serve them

    def _point(self, phase_dir: Path) -> None:
        """Every node's part, its runs recorded under phase_dir/NODE (only while the fleet is quiet)."""
        for node, host in watch_hosts(self.scenario).items():
            part = {"certname": host, "repo": str(self.copy), "endpoints": ",".join(self.lab.endpoints(node)),
                    "modulepath": ":".join([str(self.copy / "site"), *self.modulepath.split(":")]),
                    "state_dir": str(phase_dir / node)}
            (self.work / f"{node}.json").write_text(json.dumps(part))

    def _clear_records(self) -> None:
        for part in ("hosts/", "done/", "fires/", "refused/", "slots/", "quarantine/"):
            self._etcdctl("del", "--prefix", f"{self.layout.prefix}/{part}")

    def _settle(self, what: str) -> float:
        """Wait until quiet twice a second apart; the seconds it took."""
        start = time.monotonic()
        deadline = start + self.timeout
        while True:
            if self.quiet():
                time.sleep(1.0)
                if self.quiet():
                    return time.monotonic() - start
            if time.monotonic() > deadline:
                raise LabReplayError(f"after {self.timeout:g} s: the lab was still busy after the {what}")
            time.sleep(0.5)

    # -- the phases ----------------------------------------------------------------

    def prepare(self) -> None:
        lab = self.lab
        for node in lab.nodes:
            if lab.service_status(node, "trigger-watch").get("state") != "running":
                lab.service(node, "trigger-watch", "start")
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        shutil.copytree(self.repo, self.copy)
        self.session.mkdir(parents=True)
        self._point(self.work / CONVERGE)
        self._clear_records()

    def converge_fleet(self) -> None:
        """Every node's first run, and what it sets off: an operator's fire at the nodes with
        roles, then (their roles registered, so a `role:NAME` fire finds them) at the others."""
        started = time.time()
        hosts = [host for host, _ in self.scenario.nodes]
        for wave in ([h for h in hosts if h in self.members], [h for h in hosts if h not in self.members]):
            if not wave:
                continue
            node = self.lab.nodes[0]
            self.lab.run(node, [str(self.lab.venv / "bin" / "trigger"), "fire", "--hosts", ",".join(wave),
                                "--endpoints", ",".join(self.lab.endpoints(node)), "--", CONVERGE],
                         env={"TRIGGER_HOST": "operator"}, check=True)
            self._settle("converge")
            self._wait(lambda: all(self._members().get(h) == r for h, r in self.members.items()), 60,
                       f"the watchers did not register the catalogs' roles {self.members}")
        runs = self._runs(self.work / CONVERGE)
        names = watch_hosts(self.scenario)
        missing = [names[node] for node in names if not runs.get(node)]
        if missing:
            raise LabReplayError(f"the converge made no Puppet run on {', '.join(missing)}")
        failed = [f"{names[node]} (exit {rs[0]['exit_code']})" for node, rs in runs.items()
                  if node in names and rs[0]["exit_code"] not in (0, 2)]
        if failed:
            raise LabReplayError(f"the first Puppet run failed on {', '.join(failed)}")
        self.phases[CONVERGE] = {"runs": runs, "seconds": time.time() - started}

    def make_release(self) -> None:
        """The release's hiera change on the released nodes, then the release fire; wait until quiet."""
        self._clear_records()
        self._log_offsets = {node: self._watch_log(node).stat().st_size for node in self.lab.nodes}
        self._point(self.session)
        for host in self.released:
            data = self.copy / "data" / "nodes" / f"{host}.yaml"
            data.parent.mkdir(parents=True, exist_ok=True)
            data.write_text(release_data(data.read_text() if data.exists() else None, self.value))
        self.release_wall = time.time()
        self._fire(self.release.trigger, "")
        self._settle("release")
        self.phases["release"] = {"runs": self._runs(self.session), "seconds": time.time() - self.release_wall}

    def _runs(self, phase_dir: Path) -> dict[str, list[dict]]:
        out = {}
        for node in self.lab.nodes:
            path = phase_dir / node / "runs.jsonl"
            out[node] = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return out

    def collect(self):
        """LabReplay's records, with the fleet's names (in fires, refusals, inboxes) mapped to lab nodes."""
        records = super().collect()
        node_of = lab_names(self.scenario)
        records.fires = [{**f, "hosts": [node_of.get(h, h) for h in f["hosts"]]} for f in records.fires]
        records.refusals = [{**r, "chain": [node_of.get(h, h) for h in r["chain"]]} for r in records.refusals]
        records.inbox_left = {node_of.get(h, h): n for h, n in records.inbox_left.items()}
        records.run_records = {node_of.get(h, h): r for h, r in records.run_records.items()}
        return records

    def run(self) -> tuple[dict, dict]:
        """Prepare, converge, release, collect: the release's table in scenario terms."""
        self.prepare()
        self.converge_fleet()
        self.make_release()
        self.records = self.collect()
        at = self.release.at
        return lab_table(self.scenario, self.records, lambda wall: at + wall - self.release_wall)

    def notes(self) -> tuple[str, ...]:
        notes = []
        for phase, seen in self.phases.items():
            durations = [r["end"] - r["start"] for runs in seen["runs"].values() for r in runs]
            if durations:
                notes.append(f"{phase}: {len(durations)} Puppet run(s) of {min(durations):.1f} to "
                             f"{max(durations):.1f} s (median {statistics.median(durations):.1f}); "
                             f"the lab quiet after {seen['seconds']:.0f} s")
        return tuple(notes)
