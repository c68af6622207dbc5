"""`trigger completion bash|zsh`: scripts made from the parser, loaded in a real bash."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import need


def completion(shell: str) -> str:
    return subprocess.run([sys.executable, "-m", "trigger", "completion", shell], capture_output=True,
                          text=True, check=True, timeout=60).stdout


def complete_in_bash(script: str, *words: str) -> list[str]:
    """What bash's completion offers for the last of `words`, with the script sourced."""
    bash = need("bash", "bash")
    line = " ".join(words)
    program = (
        'source /dev/stdin\n'
        'function=$(complete -p trigger | sed -n "s/.* -F \\([^ ]*\\) .*/\\1/p")\n'
        f'COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE="{line}"; COMP_POINT={len(line)}\n'
        f'"$function" trigger "{words[-1]}" "{words[-2]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run([bash, "--norc", "--noprofile", "-c", program], input=script,
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout.split()


def test_bash_completes_commands_and_their_options():
    script = completion("bash")
    assert complete_in_bash(script, "trigger", "fi") == ["fire"]
    assert sorted(complete_in_bash(script, "trigger", "h")) == ["history"]
    assert complete_in_bash(script, "trigger", "fire", "--ser") == ["--serial"]
    assert "--metrics-port" in complete_in_bash(script, "trigger", "watch", "--me")
    assert complete_in_bash(script, "trigger", "completion", "z") == ["zsh"]


def test_zsh_gets_a_compdef_script_naming_every_command():
    script = completion("zsh")
    assert script.startswith("#compdef trigger")
    for command in ("fire", "wait", "watch", "status", "history", "completion", "manpage"):
        assert f"\n    {command}:'" in script, command


def test_an_unknown_shell_is_one_line_and_exit_2():
    done = subprocess.run([sys.executable, "-m", "trigger", "completion", "fish"], capture_output=True,
                          text=True, check=False, timeout=60)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "'fish'" in done.stderr


@pytest.mark.parametrize("argv", [["fire", "t", "--hosts", "h1", "--endpoints", "http://127.0.0.1:9"],
                                  ["--help"]])
def test_a_cold_command_does_not_load_shtab(argv):
    code = ("import sys, trigger.cli\n"
            "try:\n"
            f"    trigger.cli.main({argv!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('shtab' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"
