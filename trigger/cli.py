"""`trigger`: fire, wait, watch, run, status, history, logs, leader, drop, auth, completion, manpage.

Each command lives in its own module under `trigger/commands/`, with its
arguments, the checks of its options and what it does; this module only
builds the parser and maps errors to exit codes. Every option is checked
before anything is written or run. Errors the user can fix end in one line
on stderr and a non-zero exit: 2 for bad input, 1 when the store cannot be
reached, 3 for a fire refused by the loop TTL, 4 when a waited-for run
failed or did not finish in time, 5 when what was asked for is not there
(no holder of an election, no such fire or run), 64 when a run was refused
the options its fires asked for, 75 when a run could not be
recorded as started, 130 when a wait was interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .commands.common import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_REFUSED,
                              EXIT_UNAVAILABLE, NotFound)
from .fire import LoopRefused
from .layout import Layout
from .output import closed_pipe_ends_quietly, one_line
from .queue import QueueError
from .records import BadRecord
from .store import StoreError

# name: its module under trigger/commands/ (HELP, arguments(p), check(args) or none, run(args));
# only the command named is imported.
COMMANDS = {name: f"trigger.commands.{name}" for name in
            ("fire", "wait", "watch", "run", "status", "history", "logs", "leader", "drop", "auth",
             "completion", "manpage")}


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size tells it: $COLUMNS, stdout's, or 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; help that names its default in words
    (an environment variable, a computed value) is left as written."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        # argparse makes one for every option and asks shutil for the width: importing
        # shutil (with zlib, bz2 and lzma) was 1.6 ms of every cold start
        if width is None:
            width = _columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings
                or isinstance(action, argparse._StoreFalseAction)):  # --no-X: "(default: True)" says nothing
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """A bad option is one line and exit 2, like any other bad input."""
        print(f"trigger: error: {one_line(message)} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


DISTRIBUTION = "puppet-trigger"  # the import package is `trigger`; the name `trigger` is another project's


class _Version(argparse._VersionAction):
    """--version, looked up only when asked: importlib.metadata costs every command 11 ms."""

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version(DISTRIBUTION)
        except PackageNotFoundError:
            found = "unknown"
        print(f"trigger {found}")
        parser.exit()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the words it will parse, only the command they name (building
    all the others costs a cold `trigger fire` 4 ms)."""
    parser = Parser(prog="trigger", formatter_class=HelpFormatter,
                    description="Puppet-native cross-node orchestration over etcd. Exit codes: 0 done, "
                    "1 etcd unreachable, 2 bad input, 3 fire refused by the loop TTL, 4 a waited-for run "
                    "failed or timed out, 5 not found (no election holder, no such fire), "
                    "75 run not recorded as started, 130 wait interrupted.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND",
                                title="commands")
    names = [argv[0]] if argv and argv[0] in COMMANDS else COMMANDS
    for name in names:
        command = importlib.import_module(COMMANDS[name])
        p = sub.add_parser(name, help=command.HELP, description=command.HELP, formatter_class=HelpFormatter)
        p.set_defaults(func=getattr(command, "run", None), check=getattr(command, "check", None))
        command.arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a closed pipe ends it quietly with exit 141 (output.closed_pipe_ends_quietly)."""
    return closed_pipe_ends_quietly(lambda: run_command(sys.argv[1:] if argv is None else argv))


def run_command(argv: list[str]) -> int:
    args = build_parser(argv).parse_args(argv)
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    try:
        # Everything is checked before anything is read, written or run.
        if hasattr(args, "prefix"):
            Layout(args.prefix)
        if args.check is not None:
            args.check(args)
        return args.func(args)
    except LoopRefused as exc:
        print(f"trigger: warning: {one_line(exc)}", file=sys.stderr)
        return EXIT_REFUSED
    except (BadRecord, ValueError) as exc:
        print(f"trigger: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NotFound as exc:
        print(f"trigger: error: {one_line(exc.args[0])}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except StoreError as exc:
        print(f"trigger: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except QueueError as exc:  # e.g. task-spooler not installed
        print(f"trigger: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TimeoutError as exc:
        print(f"trigger: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
