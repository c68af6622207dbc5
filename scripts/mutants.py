#!/usr/bin/env python3
"""Mutation check: does the unit suite notice small, plausible bugs in the rules?

Each mutant below is one bug a careful reviewer might write (a flipped
comparison, a dropped condition, a skipped step), named for what it breaks.
It is applied to a fresh copy of the checkout (never to the checkout
itself), the unit tests of the mutated module run against that copy
(TESTS_OF: the tests that mirror it and the simulations that run it) with a
time limit, and the mutant counts as killed when they fail (or hang: past
three times the unmutated run). The score is killed / total; the
survivors are printed with their names.

    scripts/mutants.py                   every mutant
    scripts/mutants.py -k lease          the mutants whose name holds "lease"
    scripts/mutants.py --tests tests/unit      every unit test for each mutant (slow)
    scripts/mutants.py --tests-from 9bafb2a    the tests of an older commit (a score before)
    scripts/test.sh --mutants            the same as the first line

Not part of CI's default run (tens of minutes on two cores). The last score
goes in tests/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the checkout
    original: str  # must occur exactly once in the file
    mutated: str


MUTANTS = [
    # -- trigger/core.py: the watcher's decisions ---------------------------------------------
    Mutant("snapshot_keeps_started_claims_pending", "trigger/core.py",
           '            if run.state == "started":\n                for event_id in run.served:',
           '            if False:\n                for event_id in run.served:'),
    Mutant("run_record_host_not_checked", "trigger/core.py",
           "if run.run_id != name or run.host != self.host:",
           "if run.run_id != name:"),
    Mutant("queues_beside_a_queued_run", "trigger/core.py",
           "if not self.pending or self.queued_run is not None or now < self.retry_at:",
           "if not self.pending or now < self.retry_at:"),
    Mutant("back_off_ignored", "trigger/core.py",
           "if not self.pending or self.queued_run is not None or now < self.retry_at:",
           "if not self.pending or self.queued_run is not None:"),
    Mutant("back_off_never_doubles", "trigger/core.py",
           "delay = first_delay if self.failures == 1 else 2.0 ** min(self.failures - 1, 16)",
           "delay = first_delay"),
    Mutant("lost_run_keeps_its_fires", "trigger/core.py",
           "            if entry is not None:\n                self.pending[event_id] = entry",
           "            if entry is not None:\n                pass"),
    Mutant("dead_started_run_never_judged", "trigger/core.py",
           'if run.state == "started" and run.run_id != self.lock_holder]',
           'if run.state == "started" and False]'),
    Mutant("queued_run_missing_from_queue_kept", "trigger/core.py",
           "if live is not None and run.run_id not in live:",
           "if False:"),
    Mutant("started_run_claims_nothing", "trigger/core.py",
           'if run.state in ("started", "finished"):\n                # Claimed',
           'if run.state == "finished":\n                # Claimed'),
    Mutant("failures_never_reset", "trigger/core.py",
           "self.failures = 0  # a run got through",
           "pass  # a run got through"),
    # -- trigger/procedures.py: the steps of a triggered run ----------------------------------
    Mutant("fenced_run_recorded_finished", "trigger/procedures.py",
           "    if stopped:  # its fires go back to the inbox",
           "    if False:  # its fires go back to the inbox"),
    Mutant("lease_gone_ignored", "trigger/procedures.py",
           "        except StoreError:\n            pass  # the lease is gone",
           "        except StoreError:\n            continue  # the lease is gone"),
    Mutant("renewals_failing_forever_ignored", "trigger/procedures.py",
           "            if (yield NOW) < stop_at:\n                continue",
           "            if (yield NOW) >= 0:\n                continue"),
    Mutant("store_step_tried_once", "trigger/procedures.py",
           "for attempt in range(policy.attempts):",
           "for attempt in range(1):"),
    # -- trigger/runner.py: the store steps of a run ------------------------------------------
    Mutant("own_run_lock_not_recognised", "trigger/runner.py",
           "    if holder == run_id:\n        return None",
           "    if False:\n        return None"),
    Mutant("stale_lock_of_finished_run_kept", "trigger/runner.py",
           "    if _finished(store, layout, host, holder):",
           "    if False:"),
    Mutant("claim_count_unbounded", "trigger/runner.py",
           "if size > MAX_CLAIM_BYTES or len(claimed) >= MAX_SERVED:",
           "if size > MAX_CLAIM_BYTES:"),
    Mutant("limited_entries_claimed_without_slot", "trigger/runner.py",
           "entries = [e for e in entries if not e[2].max_concurrent or e[2].trigger in held]",
           "entries = list(entries)"),
    Mutant("hop_count_dropped", "trigger/runner.py",
           "lineage = Lineage(best.hop, best.chain) if best else Lineage()",
           "lineage = Lineage()"),
    Mutant("retried_start_claims_again", "trigger/runner.py",
           "    if again:\n        return own  # the same claim",
           "    if False:\n        return own  # the same claim"),
    # -- trigger/records.py: what a value may hold --------------------------------------------
    Mutant("value_limit_off_by_one", "trigger/records.py",
           "    if len(value) > limit:",
           "    if len(value) >= limit:"),
    Mutant("ttl_limit_off_by_one", "trigger/records.py",
           "not 1 <= ttl <= MAX_TTL",
           "not 1 <= ttl < MAX_TTL"),
    Mutant("hop_zero_accepted", "trigger/records.py",
           "    if hop < 1:",
           "    if hop < 0:"),
    Mutant("unknown_run_state_accepted", "trigger/records.py",
           "    if state not in RUN_STATES:",
           "    if False:"),
    Mutant("host_name_prefix_match", "trigger/records.py",
           "if not _HOST_RE.fullmatch(host):",
           "if not _HOST_RE.match(host):"),
    # -- trigger/coordination.py: roles and slots ---------------------------------------------
    Mutant("roleless_member_matches_every_role", "trigger/coordination.py",
           "found = sorted(m.host for m in members if role in m.roles)",
           "found = sorted(m.host for m in members if not m.roles or role in m.roles)"),
    Mutant("empty_role_not_reported", "trigger/coordination.py",
           "        if not found:\n            empty.append(role)",
           "        if False:\n            empty.append(role)"),
    Mutant("election_leader_newest", "trigger/coordination.py",
           "return sorted(items, key=lambda kv: kv.create_revision)",
           "return sorted(items, key=lambda kv: -kv.create_revision)"),
    # -- trigger/driver.py ---------------------------------------------------------------------
    Mutant("process_alive_ignores_boot_id", "trigger/driver.py",
           "if not BOOT_ID or boot != BOOT_ID or not pid.isdigit():",
           "if not pid.isdigit():"),
    # -- simulator/report.py: the --check verdicts --------------------------------------------
    Mutant("check_counts_any_finished_run", "simulator/report.py",
           "if not any(started >= fired_at for started in ledger.completed.get(key, ()))",
           "if not ledger.completed.get(key)"),
    Mutant("check_ignores_unexplained_unserved", "simulator/report.py",
           "        if reason is None:\n            problems.append(",
           "        if False:\n            problems.append("),
    Mutant("check_allows_two_runs_at_once", "simulator/report.py",
           "        if most > 1:",
           "        if most > 2:"),
]

# The unit tests that can notice a bug in each module: its mirror, and what runs it.
SIMULATIONS = ["tests/unit/simulator/test_sim_model.py", "tests/unit/simulator/test_sim_faults.py",
               "tests/unit/simulator/test_sim_properties.py"]
TESTS_OF = {
    "trigger/core.py": ["tests/unit/test_core.py", "tests/unit/security/test_fuzz_inbox.py", *SIMULATIONS],
    "trigger/procedures.py": ["tests/unit/test_procedures.py", "tests/unit/test_runner.py", *SIMULATIONS],
    "trigger/runner.py": ["tests/unit/test_runner.py", "tests/unit/test_procedures.py", *SIMULATIONS],
    "trigger/records.py": ["tests/unit/test_records.py", "tests/unit/security/test_hostile_values.py",
                           "tests/unit/test_core.py"],
    "trigger/coordination.py": ["tests/unit/test_coordination.py", "tests/unit/simulator/test_sim_coordination.py",
                                "tests/unit/test_procedures.py"],
    "trigger/driver.py": ["tests/unit/test_driver.py", "tests/unit/test_procedures.py"],
    "simulator/report.py": ["tests/unit/simulator/test_sim_report.py", *SIMULATIONS],
}

IGNORED = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.pyc", ".pytest_cache",
                                 ".hypothesis", "runs", "*.egg-info")


def apply(copy: Path, mutant: Mutant) -> None:
    target = copy / mutant.path
    text = target.read_text()
    count = text.count(mutant.original)
    if count != 1:
        raise SystemExit(f"{mutant.name}: its original text occurs {count} times in "
                         f"{mutant.path} (the code moved: update the mutant)")
    target.write_text(text.replace(mutant.original, mutant.mutated))


def run_tests(copy: Path, tests: list[str], per_test: int, whole: int) -> tuple[str, float]:
    """'killed', 'survived' or 'hung' (the whole run over `whole` s), and the time taken."""
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
            "-o", f"timeout={per_test}", *tests]
    started = time.monotonic()
    # Its own session: a timed-out run's children (etcd, tsp) are ended with it.
    proc = subprocess.Popen(argv, cwd=copy, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        code = proc.wait(timeout=whole)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        return "hung", time.monotonic() - started
    took = time.monotonic() - started
    if code == 0:
        return "survived", took
    if code == 1:
        return "killed", took
    raise SystemExit(f"pytest exited {code} (not a test failure): run it by hand in {copy}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only the mutants whose name contains this")
    parser.add_argument("--tests", nargs="*", default=None,
                        help="what pytest runs against each mutant (default: TESTS_OF its module)")
    parser.add_argument("--tests-from", metavar="COMMIT",
                        help="run the tests/ of this commit instead of the checkout's")
    parser.add_argument("--per-test", type=int, default=60, help="seconds a test may take")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.k in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:45} {m.path}")
        return 0
    with tempfile.TemporaryDirectory(prefix="trigger-mutants-") as tmp:
        copy = Path(tmp) / "checkout"
        shutil.copytree(ROOT, copy, ignore=IGNORED)
        if args.tests_from:
            shutil.rmtree(copy / "tests")
            archive = subprocess.run(["git", "archive", args.tests_from, "tests"], cwd=ROOT,
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x"], cwd=copy, input=archive, check=True)
        for mutant in chosen:  # every mutant still applies: fail before the long part
            pristine = (copy / mutant.path).read_text()
            apply(copy, mutant)
            (copy / mutant.path).write_text(pristine)
        def tests_of(mutant: Mutant) -> list[str]:  # those the chosen commit has
            return [t for t in args.tests or TESTS_OF[mutant.path] if (copy / t).exists()]

        every = sorted({t for m in chosen for t in tests_of(m)})
        verdict, took = run_tests(copy, every, args.per_test, 3600)
        if verdict != "survived":
            print(f"the tests fail without any mutant ({verdict}): fix that first")
            return 2
        print(f"unmutated: pass in {took:.0f} s", flush=True)
        whole = max(120, 3 * int(took))  # longer than that: it hangs
        survivors = []
        for mutant in chosen:
            pristine = (copy / mutant.path).read_text()
            apply(copy, mutant)
            try:
                verdict, took = run_tests(copy, tests_of(mutant), args.per_test, whole)
            finally:
                (copy / mutant.path).write_text(pristine)
            print(f"{verdict:9} {took:5.0f} s  {mutant.name} ({mutant.path})", flush=True)
            if verdict == "survived":
                survivors.append(mutant.name)
    killed = len(chosen) - len(survivors)
    print(f"\nscore: {killed}/{len(chosen)} killed"
          + (f"; survivors: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
