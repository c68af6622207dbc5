"""README samples of `trigger-sim` output, made by running the command they show.

A sample is a fenced block right after a marker line naming its command:

    <!-- sample: trigger-sim run seed -->
    ```
    (the command's output, as a pipe gets it)
    ```

`| grep TEXT` after the command keeps only the lines holding TEXT. The
last line of a run (simulated events per second, the files written)
describes the machine, not the scenario, and is left out; every other
line is the real output, byte for byte.

    python -m simulator.readme_samples            # rewrite the samples
    python -m simulator.readme_samples --check    # exit 1 naming each sample that drifted

tests/unit/simulator/test_sim_readme_samples.py runs the check, so a change
of the output that leaves a README behind fails the tests.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READMES = (ROOT / "simulator" / "README.md", ROOT / "README.md")
SAMPLE = re.compile(r"^<!-- sample: (?P<command>trigger-sim [^\n]*?) -->\n```\n(?P<output>.*?)^```$",
                    re.MULTILINE | re.DOTALL)
MACHINE_LINE = re.compile(r"^[\d,]+ simulated events in ")


def output_of(command: str) -> str:
    """What `command` (`trigger-sim ... [| grep TEXT]`) prints through a pipe,
    less its machine-dependent last line."""
    from .cli import main

    program, _, keep = command.partition(" | grep ")
    argv = shlex.split(program)[1:]
    stdout = io.StringIO()  # not a terminal: the piped output
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(stdout):
        status = main([*argv, "--out", out, "--no-plot"] if argv[:1] == ["run"] else argv)
    if status not in (0, 1):
        raise RuntimeError(f"{command}: exit {status}")
    lines = [line for line in stdout.getvalue().splitlines() if not MACHINE_LINE.match(line)]
    if keep:
        lines = [line for line in lines if shlex.split(keep)[0] in line]
    return "".join(f"{line}\n" for line in lines)


def refreshed(text: str) -> tuple[str, list[str]]:
    """The README text with every sample made again, and the commands whose sample changed."""
    stale: list[str] = []

    def again(match: re.Match) -> str:
        output = output_of(match["command"])
        if output != match["output"]:
            stale.append(match["command"])
        return match[0][: match.start("output") - match.start()] + output + "```"

    return SAMPLE.sub(again, text), stale


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    drifted = 0
    for path in READMES:
        if not path.exists():
            continue
        text, stale = refreshed(path.read_text())
        for command in stale:
            print(f"{path.relative_to(ROOT)}: the sample of `{command}` differs from its output")
        drifted += len(stale)
        if stale and not check:
            path.write_text(text)
    return 1 if check and drifted else 0


if __name__ == "__main__":
    sys.exit(main())
