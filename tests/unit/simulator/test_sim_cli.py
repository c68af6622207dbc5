"""`trigger-sim run`: files written, --check's exit status, bad input as one line and exit 2."""

from __future__ import annotations

import json

import pytest
import yaml

from simulator import SCENARIOS
from simulator.cli import main


def test_run_writes_report_timeline_and_trace(tmp_path, capsys):
    assert main(["run", "seed", "--out", str(tmp_path), "--trace"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["scenario"] == "seed" and report["check"]["ok"]
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "r000001 starts" in (tmp_path / "trace.txt").read_text()
    out = capsys.readouterr().out
    assert "lb01" in out and "total" in out and "events/s" in out


def test_large_scenarios_are_tabled_by_role_and_drawn_as_a_raster(tmp_path, capsys):
    assert main(["run", str(SCENARIOS / "storm.yaml"), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "web (500)" in out and "lb (3)" in out and "most fired at: lb" in out
    assert (tmp_path / "timeline.png").stat().st_size > 10_000


def unbounded_loop(tmp_path):
    """A loop with ttl 100 and a drain of 5 minutes: still firing when the drain ends."""
    data = yaml.safe_load((SCENARIOS / "loop.yaml").read_text())
    data["until"] = 100
    data["drain"] = 300
    data["agent"]["splay"] = 50
    for trigger in data["triggers"].values():
        trigger["ttl"] = 100
    path = tmp_path / "unbounded.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_fails_on_an_unbounded_loop(tmp_path, capsys):
    path = unbounded_loop(tmp_path)
    assert main(["run", str(path), "--out", str(tmp_path), "--no-plot"]) == 0  # reported, not judged
    assert main(["run", str(path), "--out", str(tmp_path), "--no-plot", "--check"]) == 1
    out = capsys.readouterr().out
    assert "check failed" in out and "unbounded loop" in out


def test_check_passes_on_faults_that_explain_their_unserved_fires(tmp_path):
    assert main(["run", "faults", "--out", str(tmp_path), "--no-plot", "--check"]) == 0


def test_bad_scenario_is_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"until": 10, "nodes": {"a": "x"}, "roles": {"x": {}},
                                    "triggers": {"t": {"hosts": "role:y"}}}))
    assert main(["run", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"trigger-sim: {path}: triggers.t.hosts: no node has role 'y'\n"


def test_missing_scenario_is_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_piped_output_is_not_wrapped_and_has_no_trailing_spaces(tmp_path):
    """Through a real pipe (a CI log, `| grep`): a line is as long as it needs, no padding."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "simulator.cli", "run", "loop", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True,
                            env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"})
    lines = result.stdout.splitlines()
    assert [line for line in lines if line != line.rstrip()] == []
    check = [line for line in lines if line.startswith("check: ok")]
    assert check == ["check: ok (every fire served by a run that started after it and ran to its end, "
                     "loops bounded)"]
    chains = [line for line in lines if "loop refused by ttl" in line]
    assert chains and all(line.endswith("a.example.com") or line.endswith("b.example.com") for line in chains)
    assert any(len(line) > 80 for line in lines)  # not folded at 80 columns
    assert lines[-1].endswith("timeline.png")  # the list of files written stays on its line


def test_the_header_says_ended_is_the_last_event_not_an_early_stop(tmp_path, capsys):
    assert main(["run", "seed", "--out", str(tmp_path), "--no-plot"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == ("trigger-sim: seed (seed 1, 5 nodes; agents' schedule 900 s, then a drain of up "
                      "to 3600 s; last event at 868.0 s)")


def test_an_unknown_scenario_name_points_at_list_and_the_nearest_names(capsys):
    assert main(["run", "loopx"]) == 2
    assert capsys.readouterr().err == ("trigger-sim: loopx: no such file, nor a shipped scenario; "
                                       "did you mean loop? (`trigger-sim list` shows them)\n")
    assert main(["explore", "stromm", "--runs", "1"]) == 2
    assert "did you mean storm?" in capsys.readouterr().err
    assert main(["run", "zzzzzz"]) == 2
    assert capsys.readouterr().err == ("trigger-sim: zzzzzz: no such file, nor a shipped scenario "
                                       "(`trigger-sim list` shows them)\n")


def test_a_closed_pipe_ends_trigger_sim_quietly_with_141(tmp_path):
    """`trigger-sim list | head -1` ends as `seq ... | head -1` does: no traceback, exit 141."""
    import sys

    from tests.closed_pipe import with_closed_stdout

    for argv in (["list"], ["run", "seed", "--no-plot", "--out", str(tmp_path)]):
        done = with_closed_stdout([sys.executable, "-m", "simulator.cli", *argv], timeout=120)
        assert done.returncode == 141 and "Traceback" not in done.stderr, (argv, done.stderr)


def test_list_names_a_broken_scenario_in_one_line_and_lists_the_others(monkeypatch, tmp_path, capsys):
    import simulator

    (tmp_path / "good.yaml").write_text("until: 1\nnodes: {a: r}\nroles: {r: {}}\ndescription: fine\n")
    (tmp_path / "bad.yaml").write_text("description: a colon: here\n")
    monkeypatch.setattr(simulator, "SCENARIOS", tmp_path)
    assert main(["list"]) == 2
    out, err = capsys.readouterr()
    assert out.split() == ["good", "1", "nodes", "fine"]
    assert err.startswith(f"trigger-sim: {tmp_path / 'bad.yaml'}: not valid YAML at line 1") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["explore", "seed", "--runs", "100000"], ["run", "fleet", "--no-plot"]],
                         ids=["explore", "run"])
def test_ctrl_c_ends_trigger_sim_with_130_and_one_line_not_a_traceback(tmp_path, argv):
    """An operator's Ctrl-C: exit 130, one line; explore says first how far it got. (In a
    run, the interrupt raised inside a simulated Puppet run once became its exit code.)"""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", *argv, "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        time.sleep(3)  # started, and busy
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    if argv[0] == "explore":  # what it found, on stdout
        assert err == "" and out.startswith("interrupted after ") and "of 100000 runs with random faults" in out
    else:
        assert err == "trigger-sim: interrupted\n", err
