"""`trigger manpage`: the manual page trigger(1), made from the parser.

    trigger manpage > /usr/local/share/man/man1/trigger.1    (then: man trigger)
    man -l <(trigger manpage)

Every command with its usage, help and options, as `trigger COMMAND --help`
shows them (with their defaults), so the page cannot drift from the parser.
"""

from __future__ import annotations

import argparse

HELP = "print the manual page trigger(1) in roff (man -l <(trigger manpage))"

ENVIRONMENT = [
    ("ETCDCTL_ENDPOINTS", "etcd endpoints, comma-separated (--endpoints); default http://127.0.0.1:2379"),
    ("ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY", "TLS files (--cacert, --cert, --key)"),
    ("ETCDCTL_USER, ETCDCTL_PASSWORD", "an etcd user (--user)"),
    ("TS_SOCKET", "task-spooler's socket, for trigger watch and its runs"),
    ("TRIGGER_HOP, TRIGGER_CHAIN", "set by trigger run for its command: a trigger fire inside a "
                                   "triggered run carries them on, and is refused above its ttl"),
]


def arguments(p: argparse.ArgumentParser) -> None:
    pass


def roff(text: str) -> str:
    """Text as roff prints it: backslashes and dashes escaped, no line read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.splitlines())


def _options(parser: argparse.ArgumentParser) -> list[str]:
    formatter = parser._get_formatter()
    lines = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        invocation = formatter._format_action_invocation(action)
        lines += [".TP", f"\\fB{roff(invocation)}\\fR", roff(formatter._expand_help(action) if action.help else "")]
    return lines


def page(parser: argparse.ArgumentParser, version: str) -> str:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    description, _, exits = (parser.description or "").partition(" Exit codes: ")
    lines = [f'.TH TRIGGER 1 "" "trigger {roff(version)}" "User Commands"',
             ".SH NAME", "trigger \\- " + roff(description.rstrip(".")),
             ".SH SYNOPSIS", ".B trigger", "COMMAND [OPTIONS]", ".br", ".B trigger",
             "COMMAND \\-\\-help",
             ".SH DESCRIPTION",
             roff("When a Puppet resource notifies a trigger, `trigger fire` writes one entry per "
                  "target host into etcd; `trigger watch`, one on each host, queues a Puppet run for "
                  "it in task-spooler; `trigger run` carries the run out and records its exit code. "
                  "Fires that arrive while a run is queued join it; a chain of triggers that loops "
                  "is refused at its ttl."),
             ".SH COMMANDS"]
    for name, sub in commands.choices.items():
        lines += [f'.SS "trigger {name}"', roff(sub.description or ""), ".PP",
                  ".nf", roff(sub.format_usage().strip()), ".fi", *_options(sub)]
    lines += [".SH OPTIONS", *_options(parser)]
    lines += [".SH EXIT STATUS"]
    for code, meaning in (part.strip().split(" ", 1) for part in exits.rstrip(".").split(",") if part.strip()):
        lines += [".TP", f"\\fB{code}\\fR", roff(meaning)]
    lines += [".SH ENVIRONMENT"]
    for name, meaning in ENVIRONMENT:
        lines += [".TP", f"\\fB{roff(name)}\\fR", roff(meaning)]
    lines += [".SH SEE ALSO", "\\fBtrigger\\-sim\\fR, \\fBetcdctl\\fR(1), \\fBtsp\\fR(1), \\fBpuppet\\fR(8)"]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    from importlib.metadata import PackageNotFoundError, version

    from ..cli import DISTRIBUTION, build_parser

    try:
        found = version(DISTRIBUTION)
    except PackageNotFoundError:
        found = "unknown"
    print(page(build_parser(), found), end="")
    return 0
