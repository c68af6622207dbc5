"""The part of systemd a local lab node needs: read a unit, get a command.

A namespaced node has no systemd, but the Debian packages and the project's
Puppet module still describe their daemons as units (etcd.service from
etcd-server, trigger-watch.service from `trigger::watch::etcd`). The node's
init (nodeinit.py) starts them from those files, so the lab runs exactly the
command line, environment and user the module configured.

Only what those units use is understood: `Environment=`, `EnvironmentFile=`,
`User=`, `ExecStart=`, `Restart=`, `RestartSec=`; specifiers `%%`, `%H`,
`%n`, `%N`, `%p`; `$VAR` (split into words) and `${VAR}` (one word) in
ExecStart; double and single quotes. Everything here is pure: text in,
values out, so it is tested on captured unit files.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

RESTART_POLICIES = ("no", "always", "on-failure", "on-abnormal", "on-abort", "on-success",
                    "on-watchdog")


class UnitError(ValueError):
    """A unit the lab cannot start; the message names the unit and the line."""


@dataclass(frozen=True)
class Unit:
    """The [Service] settings of a unit, as written (before expansion)."""

    name: str
    exec_start: str
    environment: tuple[tuple[str, str], ...] = ()
    environment_files: tuple[str, ...] = ()  # a leading '-' means "optional"
    user: str | None = None
    restart: str = "no"
    restart_sec: float = 0.1


@dataclass(frozen=True)
class Command:
    """What to exec: argv, the environment, the user (whose HOME, USER and
    LOGNAME the starter adds, as systemd does for `User=`)."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None


def parse_unit(name: str, text: str) -> Unit:
    """Parse a unit file's text; `name` is its file name (`etcd.service`)."""
    section, settings = None, {"environment": [], "environment_files": []}
    exec_start = None
    for number, line in enumerate(_logical_lines(text), 1):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section != "Service" or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key == "Environment":
            for word in _split_words(value, name):
                if "=" not in word:
                    raise UnitError(f"{name}: Environment= word without '=': {word!r}")
                k, v = word.split("=", 1)
                settings["environment"].append((k, v))
        elif key == "EnvironmentFile":
            settings["environment_files"].append(value)
        elif key == "User":
            settings["user"] = value or None
        elif key == "ExecStart":
            exec_start = value  # the last one wins (a type=simple unit has one)
        elif key == "Restart":
            if value not in RESTART_POLICIES:
                raise UnitError(f"{name}: unknown Restart={value}")
            settings["restart"] = value
        elif key == "RestartSec":
            settings["restart_sec"] = _seconds(value, name)
    if not exec_start:
        raise UnitError(f"{name}: no ExecStart= in [Service]")
    return Unit(
        name=name,
        exec_start=exec_start,
        environment=tuple(settings["environment"]),
        environment_files=tuple(settings["environment_files"]),
        user=settings.get("user"),
        restart=settings.get("restart", "no"),
        restart_sec=settings.get("restart_sec", 0.1),
    )


def parse_environment_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd reads them: comments, quotes, no expansion."""
    env = {}
    for line in _logical_lines(text):
        if line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key] = value
    return env


def command(unit: Unit, hostname: str, base_env: dict[str, str],
            read_file=None) -> Command:
    """The command a start of `unit` runs on host `hostname`.

    `read_file(path)` returns a file's text or None when it is missing (the
    node's files, read by the caller); a missing file not marked optional
    with '-' is an error, as in systemd.
    """
    env = dict(base_env)
    for key, value in unit.environment:
        env[key] = _specifiers(value, unit.name, hostname)
    for spec in unit.environment_files:
        optional = spec.startswith("-")
        path = _specifiers(spec.lstrip("-"), unit.name, hostname)
        text = read_file(path) if read_file else None
        if text is None:
            if optional:
                continue
            raise UnitError(f"{unit.name}: EnvironmentFile {path} is missing")
        env.update(parse_environment_file(text))
    exec_start = unit.exec_start.lstrip("@-:+!")  # prefixes that change how systemd runs it
    argv = []
    for word, quoted in _split_words_quoted(_specifiers(exec_start, unit.name, hostname), unit.name):
        argv.extend(_expand(word, quoted, env))
    if not argv or not argv[0].startswith("/"):
        raise UnitError(f"{unit.name}: ExecStart must start with an absolute path: {unit.exec_start!r}")
    return Command(tuple(argv), env, unit.user)


# -- helpers -------------------------------------------------------------------


def _logical_lines(text: str):
    """Lines with continuation backslashes joined, stripped; no blanks or comments."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line:
            yield line
    if pending.strip():
        yield pending.strip()


def _split_words(value: str, name: str) -> list[str]:
    return [word for word, _ in _split_words_quoted(value, name)]


def _split_words_quoted(value: str, name: str) -> list[tuple[str, bool]]:
    """Words of a systemd command line, each with whether it was quoted."""
    lexer = shlex.shlex(value, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words = []
    try:
        # shlex drops the quotes; look at the raw text to know if a word had them
        raw = _raw_words(value)
        parsed = list(lexer)
    except ValueError as exc:
        raise UnitError(f"{name}: cannot split {value!r}: {exc}") from None
    if len(raw) != len(parsed):
        raise UnitError(f"{name}: cannot split {value!r}")
    for text, word in zip(raw, parsed):
        words.append((word, text[:1] in "\"'"))
    return words


def _raw_words(value: str) -> list[str]:
    return re.findall(r"""(?:"[^"]*"|'[^']*'|[^\s"']+)+""", value)


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _expand(word: str, quoted: bool, env: dict[str, str]) -> list[str]:
    """systemd's ExecStart expansion: `$VAR` alone splits, `${VAR}` does not."""
    alone = _VAR.fullmatch(word)
    if alone and alone.group(2) and not quoted:
        return env.get(alone.group(2), "").split()

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1) or match.group(2), "")

    return [_VAR.sub(replace, word)]


def _specifiers(value: str, unit_name: str, hostname: str) -> str:
    prefix = unit_name.rsplit(".", 1)[0]
    table = {"%": "%", "H": hostname, "n": unit_name, "N": prefix, "p": prefix.split("@")[0]}

    def replace(match: re.Match) -> str:
        letter = match.group(1)
        if letter not in table:
            raise UnitError(f"{unit_name}: specifier %{letter} is not supported by the lab")
        return table[letter]

    return re.sub(r"%(.)", replace, value)


def _seconds(value: str, name: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|min)?", value.strip())
    if not match:
        raise UnitError(f"{name}: cannot read RestartSec={value}")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number / 1000 if unit == "ms" else number * 60 if unit == "min" else number
