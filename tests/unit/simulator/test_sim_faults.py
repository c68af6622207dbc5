"""The faults real nodes have, on simulated time (issue 12): each served as on real nodes.

Every test runs the real procedures through the simulated driver and checks
the delivery promise from the ledger: each fire is served by a run that
started after it and ran to its end, and a host never runs two triggered
commands at once.
"""

from __future__ import annotations

from simulator.report import build_report, max_running
from simulator.scenario import load_scenario
from simulator.simulation import Simulation
from trigger.records import parse_run

LB, WEB = "lb1.example.com", "web1.example.com"


def spec(until=300, fires=(), faults=(), duration=20, discovery=False) -> dict:
    data = {
        "name": "faults",
        "until": until,
        "agent": {"interval": 100000, "splay": 0, "duration": duration},
        "nodes": {WEB: "web", LB: "lb"},
        "roles": {"web": {"agent": {"duration": 1}, "resources": {}},
                  "lb": {"resources": {"cfg": {"changes": "always"}}}},
        "triggers": {"refresh": {"hosts": [LB], "ttl": 5}},
        "fires": [{"at": at, "trigger": "refresh"} for at in fires],
        "faults": list(faults),
    }
    if discovery:
        data["discovery"] = {"member_ttl": 10}
    return data


def simulate(data, seed=1) -> Simulation:
    return Simulation(load_scenario(data), seed=seed, trace=True).run()


def lines(sim, host=LB):
    return [(t, what) for t, h, what in sim.ledger.trace_lines if h == host]


def served_to_the_end(sim) -> bool:
    return all(any(s >= fired for s in sim.ledger.completed.get(key, ()))
               for key, fired in sim.ledger.fired.items())


def one_at_a_time(sim, host=LB) -> bool:
    return max_running(sim.ledger.commands.get(host, []))[0] <= 1


def test_a_killed_queue_server_is_noticed_within_the_check_interval_while_fires_keep_coming():
    # r1 runs 10..30; a fire at 11 queues r2; tsp dies at 12 (r2 vanishes, r1 runs on);
    # fires every 0.7 s must not postpone the re-read that notices r2 is gone.
    fires = [10] + [11 + 0.7 * i for i in range(40)]
    sim = simulate(spec(fires=fires, faults=[{"at": 12, "kind": "kill_tsp", "hosts": LB}]))
    lost = [t for t, what in lines(sim) if what.startswith("mark r000002 lost")]
    assert lost and 12 < lost[0] <= 12 + 5 + 0.01
    assert served_to_the_end(sim) and one_at_a_time(sim)
    assert build_report(sim).ok


def test_a_run_killed_during_its_command_gives_its_fires_back():
    sim = simulate(spec(fires=[10], faults=[{"at": 15, "kind": "kill_run", "hosts": LB}]))
    trace = lines(sim)
    assert (15.0, "trigger run killed with its command") in trace
    # its lease ends 30 s after its last renewal; then the lock is gone and the fire runs again
    assert any(what.startswith("mark r000001 lost: its run lock went") for _, what in trace)
    assert any(what.startswith("r000002 starts: serves ev0000001") for _, what in trace)
    assert served_to_the_end(sim) and build_report(sim).ok


def test_a_reboot_with_a_run_queued_serves_it_after_the_boot():
    sim = simulate(spec(fires=[10, 12], faults=[{"at": 14, "kind": "reboot", "hosts": LB, "for": 30}]))
    starts = [t for t, what in lines(sim) if "starts: serves" in what]
    assert starts[0] == 10.002 and any(t >= 44 for t in starts[1:])
    assert served_to_the_end(sim) and one_at_a_time(sim) and build_report(sim).ok


def test_writes_applied_with_their_answers_lost_keep_the_claim_and_the_hop():
    sim = simulate(spec(fires=[10], faults=[{"at": 9, "kind": "ambiguous_writes", "hosts": LB, "for": 3}]))
    started = [what for _, what in lines(sim) if "starts: serves" in what]
    assert started and all("(hop 1)" in what for what in started)
    assert served_to_the_end(sim) and build_report(sim).ok


def test_slow_store_calls_delay_but_lose_nothing():
    fault = {"at": 5, "kind": "latency", "hosts": LB, "for": 100, "delay": {"uniform": [0.1, 2]}}
    sim = simulate(spec(fires=[10, 10.5, 30], faults=[fault]))
    assert served_to_the_end(sim) and one_at_a_time(sim) and build_report(sim).ok


def test_a_second_watcher_stands_by_and_each_fire_runs_once():
    fault = {"at": 5, "kind": "duplicate_watcher", "hosts": LB, "for": 100}
    sim = simulate(spec(fires=[10, 60], faults=[fault], discovery=True))
    trace = lines(sim)
    assert any("standby" in what for _, what in trace)
    assert sum("starts: serves" in what for _, what in trace) == 2  # one run per fire, not two
    assert sim.operator.get(sim.layout.member_key(LB)) is not None  # the duplicate left it alone
    assert served_to_the_end(sim) and build_report(sim).ok


def test_the_standby_takes_over_when_the_first_watcher_dies():
    faults = [{"at": 5, "kind": "duplicate_watcher", "hosts": LB, "for": 200},
              {"at": 20, "kind": "kill_watcher", "hosts": LB}]
    sim = simulate(spec(fires=[60], faults=faults, discovery=True))
    assert any("no longer standby" in what for _, what in lines(sim))
    assert served_to_the_end(sim)


def test_the_check_names_two_runs_at_once_on_a_host():
    sim = simulate(spec(fires=[10]))
    sim.ledger.commands[LB].append((10.5, 11.0, "rX"))  # what the old tsp kill made possible
    problems = build_report(sim).data["check"]["problems"]
    assert any("2 triggered runs at once on lb1.example.com" in p for p in problems)


def test_the_check_names_a_run_id_executed_twice():
    """Issue 21: a run id is carried out at most once; a standby started anew
    executed the same run a second time. One after the other is still twice."""
    sim = simulate(spec(fires=[10]))
    assert build_report(sim).ok
    start, end, run_id = sim.ledger.commands[LB][0]
    sim.ledger.commands[LB].append((end + 5, end + 6, run_id))
    problems = build_report(sim).data["check"]["problems"]
    assert f"1 run(s) on {LB} executed more than once, first {run_id}" in problems


# -- issue 21's faults -------------------------------------------------------------------


def starts(sim, host=LB):
    return [(t, what.split()[0]) for t, what in lines(sim, host) if " starts: serves " in what]


def test_a_wall_clock_stepped_back_does_not_delay_a_retry():
    """The queue refuses the run at 10.002 s, so the core retries 1 s later.
    The host's clock steps back 10 s in between: the retry is measured on the
    monotonic clock and still comes at 11.002 s, not at 21.002 s."""
    faults = [{"at": 9.9, "kind": "kill_tsp", "hosts": LB, "for": 1},
              {"at": 10.5, "kind": "clock_step", "hosts": LB, "step": -10}]
    sim = simulate(spec(fires=[10], faults=faults))
    assert (10.002, "mark r000001 lost: could not queue: task-spooler server is not running") in lines(sim)
    assert starts(sim) == [(11.002, "r000002")]
    assert served_to_the_end(sim) and build_report(sim).ok


def test_a_wall_clock_stepped_either_way_loses_no_run_and_delays_none():
    plain = simulate(spec(fires=[10, 40, 41, 100]))
    for step in (-3600, 3600):
        fault = {"at": 5, "kind": "clock_step", "hosts": LB, "step": step, "for": 100}
        sim = simulate(spec(fires=[10, 40, 41, 100], faults=[fault]))
        assert starts(sim) == starts(plain)
        assert sim.nodes[LB].stats.runs_lost == plain.nodes[LB].stats.runs_lost == 0
        assert build_report(sim).ok


LB2 = "lb2.example.com"


def serial_spec(faults=(), duration=60) -> dict:
    """Two LBs refreshed by a serial trigger, a fire reaching both at 70 s
    (after their first scheduled runs)."""
    data = spec(fires=[70], faults=faults, duration=duration)
    data["nodes"][LB2] = "lb"
    data["triggers"]["refresh"] = {"hosts": [LB, LB2], "serial": True}
    return data


def simulate_without_watchdog(data, host=LB) -> Simulation:
    sim = Simulation(load_scenario(data), seed=1, trace=True)
    sim.nodes[host].watchdog = False  # `trigger run` could not start it
    return sim.run()


def test_a_killed_runner_s_command_dies_within_the_grace_and_its_run_is_lost_later():
    sim = simulate(spec(fires=[25], faults=[{"at": 30, "kind": "kill_runner", "hosts": LB}]))
    trace = lines(sim)
    assert (30.0, "trigger run killed; its command is left to the watchdog") in trace
    assert (32.0, "r000001 stopped before its end") in trace  # SIGKILL after stop_grace
    # its lease, granted at 25.002 s, ends 30 s later: then the lock goes and the run is lost
    assert (55.002, "mark r000001 lost: its run lock went while it ran: it died before its end") in trace
    assert [run_id for _, run_id in starts(sim)] == ["r000001", "r000002"]
    assert served_to_the_end(sim) and one_at_a_time(sim) and build_report(sim).ok


def test_without_the_watchdog_a_killed_runner_s_command_runs_beside_the_next_run():
    data = spec(fires=[70], faults=[{"at": 75, "kind": "kill_runner", "hosts": LB}], duration=60)
    assert build_report(simulate(data)).ok
    problems = build_report(simulate_without_watchdog(data)).data["check"]["problems"]
    assert f"2 triggered runs at once on {LB} at 100.002 s" in problems


def test_a_killed_runner_keeps_its_serial_slot_until_its_command_is_gone():
    data = serial_spec(faults=[{"at": 75, "kind": "kill_runner", "hosts": LB}])
    sim = simulate(data)
    (limit,) = build_report(sim).data["limits"]
    assert limit["max_running"] == 1 and build_report(sim).ok
    assert served_to_the_end(sim)
    exceeded = build_report(simulate_without_watchdog(data)).data["check"]["problems"]
    assert any("2 runs of 'refresh' at once" in p for p in exceeded)


def test_tsp_k_of_a_running_job_stops_its_command_and_gives_its_fires_back_at_once():
    sim = simulate(spec(fires=[25], faults=[{"at": 30, "kind": "kill_job", "hosts": LB}]))
    trace = lines(sim)
    assert (30.0, "r000001 stopped before its end") in trace
    assert (30.0, "r000001 gave its fires back: trigger run got SIGTERM (tsp -k?); command stopped") in trace
    assert starts(sim) == [(25.002, "r000001"), (30.002, "r000002")]  # served by the next run, not lost
    assert sim.nodes[LB].stats.runs_lost == 0
    assert served_to_the_end(sim) and one_at_a_time(sim) and build_report(sim).ok


def test_tsp_k_of_a_job_waiting_for_its_slot_loses_no_fire():
    data = serial_spec(faults=[{"at": 75, "kind": "kill_job", "hosts": LB2}])
    sim = simulate(data)
    assert (75.0, "tsp -k: r000001 exits, no command running (exit 143)") in lines(sim, LB2)
    assert served_to_the_end(sim) and build_report(sim).ok


def test_a_black_holed_run_stops_its_command_before_its_lease_can_end():
    """Renewals get no answer: each is given only the time left before
    stop_after (27 s after the last renewal), so the command is stopped at
    92.002 s, before etcd ends the lease at 95.002 s, and not 15 s per
    unanswered renewal later."""
    fault = {"at": 70, "kind": "black_hole", "hosts": LB, "for": 90}
    sim = simulate(spec(fires=[65], faults=[fault], duration=60))
    trace = lines(sim)
    assert (92.002, "r000001 stopped before its end") in trace
    first = [round(end, 3) for _, end, run_id in sim.ledger.commands[LB] if run_id == "r000001"]
    assert first == [92.002]
    # the watcher hears nothing either until the hole closes: then the run is lost and served again
    assert [run_id for _, run_id in starts(sim)] == ["r000001", "r000002"] and starts(sim)[1][0] >= 160
    assert served_to_the_end(sim) and one_at_a_time(sim) and build_report(sim).ok


def test_a_black_hole_is_not_a_refusal_calls_wait_for_their_timeout():
    hole = simulate(spec(fires=[25], faults=[{"at": 20, "kind": "black_hole", "hosts": LB, "for": 60}]))
    cut = simulate(spec(fires=[25], faults=[{"at": 20, "kind": "cut_off", "hosts": LB, "for": 60}]))
    # the watcher's re-reads give up after the client's timeouts (3 endpoints x 5 s), not at once
    assert any("no answer within 15.0s" in what for _, what in lines(hole))
    assert not any("no answer" in what for _, what in lines(cut))
    assert served_to_the_end(hole) and build_report(hole).ok


def test_a_black_holed_serial_run_is_stopped_before_the_next_holder_starts():
    data = serial_spec(faults=[{"at": 75, "kind": "black_hole", "hosts": LB, "for": 120}])
    sim = simulate(data)
    (limit,) = build_report(sim).data["limits"]
    assert limit["max_running"] == 1 and build_report(sim).ok and served_to_the_end(sim)


def test_a_background_child_is_stopped_with_its_run_and_delays_the_next_by_the_stop_only():
    """Runs leave a child that would live 200 s: `trigger run`, its subreaper,
    stops it once Puppet has exited (SIGKILL after stop_grace at worst), records
    the run saying so, and the next run starts then, not when the child would end."""
    fires = [25, 30]
    plain = starts(simulate(spec(fires=fires)))
    sim = simulate(spec(fires=fires, faults=[{"at": 20, "kind": "orphan_child", "hosts": LB, "for": 200}]))
    assert plain == [(25.002, "r000001"), (45.002, "r000002")]
    assert starts(sim) == [(25.002, "r000001"), (47.002, "r000002")]
    assert (47.002, "r000001: the command left 1 process behind (a background child): stopped with its run "
                    "(a run command must not daemonize or leave children running)") in lines(sim)
    done = parse_run(sim.operator.get(sim.layout.done_key(LB, "r000001")).value)
    assert done.reason.startswith("the command left 1 process behind") and done.exit_code == 2
    assert served_to_the_end(sim) and one_at_a_time(sim) and build_report(sim).ok


def test_tsp_k_while_the_run_stops_what_its_command_left_gives_the_fires_back():
    """As Command.stop does for real: the command's process is still the run's
    while its leftovers are stopped, so a SIGTERM then counts as a stop from
    outside: the fires go back and the next run serves them."""
    faults = [{"at": 20, "kind": "orphan_child", "hosts": LB, "for": 200},
              {"at": 46, "kind": "kill_job", "hosts": LB}]
    sim = simulate(spec(fires=[25], faults=faults))
    assert (47.002, "r000001 gave its fires back: trigger run got SIGTERM (tsp -k?); command stopped") \
        in lines(sim)
    assert [run_id for _, run_id in starts(sim)] == ["r000001", "r000002"]
    assert served_to_the_end(sim) and one_at_a_time(sim) and build_report(sim).ok


def test_a_watcher_started_while_etcd_is_away_waits_for_it_rather_than_exiting():
    """Found by `trigger-sim explore rolling` (seed 55, a reboot ending inside a
    black hole): with discovery, claiming the host was the one step that let an
    unreachable etcd end the daemon. It waits and claims once etcd answers."""
    faults = [{"at": 5, "kind": "kill_watcher", "hosts": LB, "for": 10},
              {"at": 10, "kind": "cut_off", "hosts": LB, "for": 30}]
    sim = simulate(spec(fires=[20], faults=faults, discovery=True))
    assert not any("this watcher stopped" in what for _, what in lines(sim))
    assert starts(sim) and starts(sim)[0][0] >= 40
    assert served_to_the_end(sim) and build_report(sim).ok


def test_a_run_whose_lease_ended_while_its_start_was_retried_does_not_start_its_command():
    """Found by `trigger-sim explore rolling` (seed 427) once every limited run's
    Puppet span counted: lb02's start was retried through lost answers, its lease
    ended meanwhile (the keeper had nothing to stop yet), then the start got
    through and Puppet ran beside lb01, which had the serial slot by then."""
    import yaml

    from simulator import SCENARIOS

    data = yaml.safe_load((SCENARIOS / "rolling.yaml").read_text())
    data["faults"] = [{"at": 139.267, "kind": "ambiguous_writes", "hosts": "lb02.example.com", "for": 96.964}]
    sim = Simulation(load_scenario(data), seed=427, trace=True).run()
    report = build_report(sim)
    assert report.ok, report.data["check"]["problems"]
    assert any("lease not renewed for 27 s; command not started" in what
               for _, what in lines(sim, "lb02.example.com"))


def test_a_run_waiting_for_the_run_lock_rides_out_a_cut_off():
    """Found by `trigger-sim explore rolling` (seed 2218): a run waiting for a
    killed runner's lock lost its watch to a cut-off, and asking for a new
    one while still cut off ended `trigger run` in a traceback."""
    faults = [{"at": 30, "kind": "kill_runner", "hosts": LB}, {"at": 35, "kind": "cut_off", "hosts": LB, "for": 14}]
    sim = simulate(spec(fires=[25, 27], faults=faults))
    assert any(what.startswith("r000002 waits for run r000001") for _, what in lines(sim))
    assert served_to_the_end(sim) and one_at_a_time(sim) and build_report(sim).ok
