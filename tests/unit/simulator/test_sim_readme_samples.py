"""The READMEs' samples of trigger-sim output are what the commands print today."""

from __future__ import annotations

from simulator import readme_samples


def test_every_readme_sample_is_the_output_of_its_command():
    commands = []
    for path in readme_samples.READMES:
        if path.exists():
            _, stale = readme_samples.refreshed(path.read_text())
            assert stale == [], f"{path.name}: run `python -m simulator.readme_samples` ({stale})"
            commands += [m["command"] for m in readme_samples.SAMPLE.finditer(path.read_text())]
    assert {"trigger-sim run seed", "trigger-sim run rolling | grep \"limit '\""} <= set(commands)


def test_a_drifted_sample_is_found_and_made_again():
    text = "intro\n<!-- sample: trigger-sim run seed -->\n```\ntrigger-sim: seed (an old header)\n```\nafter\n"
    fresh, stale = readme_samples.refreshed(text)
    assert stale == ["trigger-sim run seed"]
    assert fresh.startswith("intro\n<!-- sample: trigger-sim run seed -->\n```\ntrigger-sim: seed (seed 1, ")
    assert fresh.endswith("check: ok (every fire served by a run that started after it and ran to its end, "
                          "loops bounded)\n```\nafter\n")
    assert "simulated events in" not in fresh  # the machine's timing line is left out
    assert readme_samples.refreshed(fresh) == (fresh, [])


def test_grep_keeps_only_the_matching_lines():
    assert readme_samples.output_of("trigger-sim run loop | grep refused").splitlines() == [
        line for line in readme_samples.output_of("trigger-sim run loop").splitlines() if "refused" in line]
