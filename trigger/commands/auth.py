"""`trigger auth setup`: etcd users and roles for trigger (docs/security.md)."""

from __future__ import annotations

import argparse
import os

from ..layout import Layout
from ..records import BadRecord
from .common import connection_arguments, host_option, names, open_store_of, read_secret


HELP = "etcd users and roles for trigger (docs/security.md)"


def arguments(p: argparse.ArgumentParser) -> None:
    auth = p.add_subparsers(dest="auth_command", required=True, metavar="COMMAND", title="commands")
    p = auth.add_parser("setup", help="a user and role per node, a firer role, then enable etcd auth",
                        formatter_class=p.formatter_class)
    p.add_argument("--hosts", help="the nodes, comma-separated: user NAME, role trigger-node-NAME each "
                   "(default: none)")
    p.add_argument("--firers", help="users that may fire (a node that fires is one), comma-separated "
                   "(default: none)")
    p.add_argument("--password-dir", help="write new users' passwords to DIR/USER.password (mode 0600) "
                   "instead of printing them (default: print them)")
    p.add_argument("--root-password-file", help="password for etcd's root user if it is created "
                   "(default: a random one, printed or written like the others)")
    p.add_argument("--no-enable", action="store_true", help="create users and roles, leave auth off")
    p.add_argument("--dry-run", action="store_true", help="print the roles and users; touch nothing")
    connection_arguments(p)
    p.set_defaults(func=setup_command, check=None)


def setup_command(args) -> int:
    from ..auth import plan, setup, write_passwords

    layout = Layout(args.prefix)
    hosts = [host_option(h, "--hosts") for h in (args.hosts or "").split(",") if h.strip()]
    the_plan = plan(layout, hosts, names(args.firers))
    if args.dry_run:
        print("\n".join(the_plan.describe()))
        return 0
    if args.store == "memory":
        raise BadRecord("auth setup works on etcd only")
    root_password = read_secret(args.root_password_file, "--root-password-file") \
        if args.root_password_file else None
    if args.password_dir:  # before any user exists whose password would have nowhere to go
        try:
            os.makedirs(args.password_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise BadRecord(f"cannot use --password-dir {args.password_dir}: {exc.strerror}") from None

    def created(user: str, secret: str) -> None:
        """Kept at once: a later failure must not lose a password etcd has."""
        if args.password_dir:
            path, = write_passwords(args.password_dir, {user: secret})
            print(f"user {user} created; password in {path}")
        else:
            print(f"user {user} created; password {secret}")

    store = open_store_of(args)
    try:
        report = setup(store, layout, the_plan, enable=not args.no_enable,
                       root_password=root_password, created=created)
    finally:
        store.close()
    for line in the_plan.describe():
        print(line)
    for user in report.existing_users:
        print(f"user {user} existed; its password is unchanged")
    if report.enabled:
        print("authentication enabled" + ("; root created" if report.root_created else ""))
    return 0
