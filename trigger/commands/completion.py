"""`trigger completion bash|zsh`: a shell completion script, made from the parser.

    source <(trigger completion bash)                  # this shell
    trigger completion bash > /etc/bash_completion.d/trigger
    trigger completion zsh > "${fpath[1]}/_trigger"

shtab writes it from the same parser that parses the commands, so it cannot
drift from them. shtab is imported here only: a cold `trigger fire` never
loads it.
"""

from __future__ import annotations

import argparse

HELP = "print a shell completion script for bash or zsh (source it, or install it)"
SHELLS = ("bash", "zsh")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=SHELLS, help="the shell the script is for")


def run(args) -> int:
    import shtab

    from ..cli import build_parser

    print(shtab.complete(build_parser(), shell=args.shell), end="")
    return 0
