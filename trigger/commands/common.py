"""What every command shares: exit codes, the connection to etcd, the output
option, and the checks of common values."""

from __future__ import annotations

import argparse
import os

from ..layout import DEFAULT_PREFIX
from ..output import FORMATS, default_format
from ..policy import RUN, WAIT_TIMEOUT
from ..records import BadRecord, check_host
from ..store import DEFAULT_ENDPOINTS, open_store


EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_REFUSED, EXIT_FAILED = 2, 1, 3, 4
EXIT_NOT_FOUND, EXIT_INTERRUPTED = 5, 130
DEFAULT_RETENTION = 7 * 24 * 3600
DEFAULT_OK_CODES = "0,2"
# `--timeout` of fire --wait and wait, also the Puppet type's `wait_timeout` and the Bolt task's `timeout`
# (puppet/trigger): a catalog run that waits is blocked that long at most
DEFAULT_WAIT_TIMEOUT = WAIT_TIMEOUT


class NotFound(LookupError):
    """What was asked for is not there (no such fire kept): one line, exit 5."""


LAST = "last"  # an event id argument meaning the newest fire kept


def pick_event_id(wanted: str, kept: list[str]) -> str:
    """The event id meant by `wanted`: itself, `last` (kept is newest first), or the one kept id it
    begins; NotFound or BadRecord (several begin with it) naming the candidates."""
    if wanted in kept:
        return wanted
    if wanted == LAST and kept:
        return kept[0]
    found = [event_id for event_id in kept if event_id.startswith(wanted)]
    if len(found) == 1:
        return found[0]
    if found:
        raise BadRecord(f"event id {wanted!r} is ambiguous, {len(found)} kept fires begin with it: "
                        f"{few(found)}")
    newest = f"; the newest: {few(kept, 3)}" if kept else "; none is kept"
    raise NotFound(f"no fire {wanted} is kept (fired with --retention 0, or older than its retention)"
                   f"{newest}")


def few(items: list[str], shown: int = 5) -> str:
    """The first items, comma-separated, and how many more."""
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def endpoints(value: str | None) -> list[str]:
    text = value or os.environ.get("ETCDCTL_ENDPOINTS") or DEFAULT_ENDPOINTS
    endpoints = [e.strip() for e in text.split(",") if e.strip()]
    if not endpoints:
        raise BadRecord("--endpoints is empty")
    return endpoints


def open_store_of(args):
    return open_store(args.store, endpoints=endpoints(args.endpoints), **connection(args)) \
        if args.store != "memory" else open_store(args.store)


def connection(args) -> dict:
    """TLS files and credentials for etcd: options first, then etcdctl's
    environment names (ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY,
    ETCDCTL_USER, ETCDCTL_PASSWORD)."""
    options = {
        "cacert": args.cacert or os.environ.get("ETCDCTL_CACERT") or None,
        "cert": args.cert or os.environ.get("ETCDCTL_CERT") or None,
        "key": args.key or os.environ.get("ETCDCTL_KEY") or None,
    }
    user, password = credentials(args)
    if user is not None:
        options.update(user=user, password=password)
    return {name: value for name, value in options.items() if value is not None}


def credentials(args) -> tuple[str | None, str | None]:
    """(user, password) from --user NAME[:PASSWORD] or ETCDCTL_USER; the
    password, if not there, from --password-file or ETCDCTL_PASSWORD."""
    text = args.user or os.environ.get("ETCDCTL_USER") or ""
    if not text:
        if args.password_file:
            raise BadRecord("--password-file needs --user NAME (or ETCDCTL_USER)")
        return None, None
    name, colon, password = text.partition(":")
    if not name:
        raise BadRecord("--user needs a name: NAME or NAME:PASSWORD")
    if colon:
        return name, password
    if args.password_file:
        return name, read_secret(args.password_file, "--password-file")
    if "ETCDCTL_PASSWORD" in os.environ:
        return name, os.environ["ETCDCTL_PASSWORD"]
    raise BadRecord(f"no password for etcd user {name!r}: give --user {name}:PASSWORD, "
                    "--password-file FILE or ETCDCTL_PASSWORD")


def read_secret(path: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(4096)
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRecord(f"cannot read {option} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    secret = text.splitlines()[0] if text.strip() else ""
    if not secret:
        raise BadRecord(f"{option} {path} is empty")
    return secret


def pass_on(args) -> list[str]:
    """The connection options of `trigger run`, as the watcher was given them.

    Files go by absolute path. A password never goes on a command line
    (`ps` and `tsp -l` show those): a password file is passed by name;
    a password given otherwise is put into ETCDCTL_PASSWORD in our own
    environment, which the queue hands to the run (task-spooler passes the
    environment of the `tsp` call to its job; the inline queue's child
    inherits it).
    """
    options = connection(args)
    argv: list[str] = []
    for name in ("cacert", "cert", "key"):
        if name in options:
            argv += [f"--{name}", os.path.abspath(options[name])]
    if "user" in options:
        argv += ["--user", options["user"]]
        if args.password_file and ":" not in (args.user or os.environ.get("ETCDCTL_USER") or ""):
            argv += ["--password-file", os.path.abspath(args.password_file)]
        else:
            os.environ["ETCDCTL_PASSWORD"] = options["password"]
    return argv


def connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix in etcd")
    p.add_argument("--endpoints", help="etcd URLs, comma-separated (default: $ETCDCTL_ENDPOINTS, else "
                   f"{DEFAULT_ENDPOINTS}); a dead one fails over to the next; https:// for TLS")
    p.add_argument("--cacert", help="TLS: the CA that signed etcd's certificate, PEM "
                   "(default: $ETCDCTL_CACERT, else the system's CAs)")
    p.add_argument("--cert", help="TLS: this client's certificate, PEM (default: $ETCDCTL_CERT)")
    p.add_argument("--key", help="TLS: the key of --cert, PEM, unencrypted (default: $ETCDCTL_KEY)")
    p.add_argument("--user", help="etcd user, NAME or NAME:PASSWORD (default: $ETCDCTL_USER); "
                   "prefer --password-file or $ETCDCTL_PASSWORD to a password on the command line")
    p.add_argument("--password-file", help="file whose first line is the password of --user "
                   "(default: $ETCDCTL_PASSWORD)")
    p.add_argument("--store", default="etcd", choices=["etcd", "etcd-grpc", "memory"], help=argparse.SUPPRESS)


def wait_for_absent_argument(p: argparse.ArgumentParser) -> None:
    from ..policy import NO_WATCHER_GRACE

    p.add_argument("--wait-for-absent", action="store_true",
                   help=f"also wait for hosts without a live watcher (by default a host with none for "
                   f"{NO_WATCHER_GRACE:g} s is reported `no watcher` and not waited for)")


def output_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "-w", "--output", choices=FORMATS, default=None,
                   help="table, plain tab-separated rows (never cut), or json with ISO 8601 UTC "
                   "times; -w as etcdctl's (default: table on a terminal, else plain)")


def output_format(args) -> str:
    return args.output or default_format()


def origin() -> str:
    return os.environ.get("TRIGGER_HOST") or os.uname().nodename  # gethostname(), without socket


def positive(value: float, option: str) -> None:
    if not value > 0 or value != value or value == float("inf"):
        raise BadRecord(f"{option} must be a number of seconds above 0, got {value:g}")


def not_negative(value: int, option: str) -> None:
    if value < 0:
        raise BadRecord(f"{option} must be 0 or more, got {value}")


def targets(text: str) -> list[str]:
    """Host names lower-cased (DNS names are case-insensitive, inbox keys are
    not), role:NAME targets as given."""
    from ..coordination import ROLE_PREFIX, split_targets

    if any(t.strip() == ROLE_PREFIX for t in text.split(",")):
        raise BadRecord(f"{ROLE_PREFIX} needs a name: {ROLE_PREFIX}NAME, the role the watchers were given "
                        "with --roles")
    lowered = [t if t.startswith(ROLE_PREFIX) else t.lower() for t in split_targets(text)]
    return list(dict.fromkeys(lowered))


def host_option(text: str, option: str = "--host") -> str:
    try:
        return check_host(text.strip()).lower()
    except BadRecord as exc:
        raise BadRecord(f"{option}: {exc}") from None


def names(text: str | None) -> list[str]:
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    for n in names:
        if len(n) > 256:
            raise BadRecord(f"name longer than 256 characters: {n[:40]!r}...")
    return names


def ok_codes(text: str) -> tuple[int, ...]:
    try:
        codes = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise BadRecord(f"--ok-codes must be exit codes (0 to 255) separated by commas, got {text!r}") from None
    if not all(0 <= c <= 255 for c in codes):
        raise BadRecord(f"--ok-codes must be exit codes (0 to 255) separated by commas, got {text!r}")
    return codes


def run_policy(lease_ttl: int, option: str):
    """The run policy with this lease TTL, long enough to stop a command in time."""
    shortest = int(RUN.stop_grace + RUN.stop_margin) + 3
    if not shortest <= lease_ttl <= 3600:
        raise BadRecord(f"{option} must be from {shortest} to 3600 seconds, got {lease_ttl}")
    return RUN._replace(lease_ttl=lease_ttl)
