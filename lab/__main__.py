"""python -m lab: keep a lab of three trigger nodes, Molecule-style.

    python -m lab create      make the nodes, reachable over SSH
    python -m lab converge    apply the project's Puppet module, start etcd and the watchers
                              (creates the lab first if there is none)
    python -m lab verify      run tests/integration/lab against the lab, leaving it up
    python -m lab ssh node1   log into a node (or: ssh node1 -- tsp -l)
    python -m lab status      the nodes and their services
    python -m lab destroy     remove everything the lab made (also after a crash)
    python -m lab test        destroy, create, converge, verify, destroy
    python -m lab box         build (or find cached) the Vagrant lab's box (lab/box.py)

Options: --lab (or --backend) local|vagrant (default local, or $TRIGGER_LAB), --name NAME
(local lab name, default dev; with --master: master), --master (the local nodes as agents
of a Puppet server with PuppetDB: lab/local/master.py). testinfra reaches the nodes with
`--hosts=ssh://node1 --ssh-config=$(python -m lab ssh-config)`.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import BACKENDS, open_lab
from .base import LabError, format_status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--lab", "--backend", dest="lab", default=os.environ.get("TRIGGER_LAB", "local"), choices=sorted(BACKENDS),
                        help="backend (default: local)")
    parser.add_argument("--name", default=None, help="name of a local lab (default: dev, with --master: master)")
    parser.add_argument("--master", action="store_true",
                        help="the master lab: a Puppet server with PuppetDB, the nodes its agents (local only)")
    parser.add_argument("--nodes", type=int, default=None,
                        help="how many nodes a new local lab gets, 3 to 24 (default 3); etcd runs on three")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("create", help="make the nodes")
    p.add_argument("--keep-failed", action="store_true", help="leave a lab that failed to come up, to look at it")
    p = sub.add_parser("converge", help="apply the Puppet module and start the services")
    p.add_argument("--keep-failed", action="store_true")
    p = sub.add_parser("verify", help="run the lab tests against this lab")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="more pytest arguments")
    p = sub.add_parser("ssh", help="log into a node, or run a command there")
    p.add_argument("node")
    p.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("ssh-config", help="print the path of the ssh-config file")
    sub.add_parser("status", help="the nodes and their services")
    sub.add_parser("destroy", help="remove everything the lab made")
    p = sub.add_parser("test", help="destroy, create, converge, verify, destroy")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    sub.add_parser("box", help="build the Vagrant lab's box from Debian packages (cached)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = {"name": args.name or ("master" if args.master else "dev"), "nodes": args.nodes} \
        if args.lab == "local" else {}
    try:
        if args.action == "box":
            return _box()
        if args.master and args.lab != "local":
            raise LabError("--master is a local lab: drop --lab vagrant")
        lab = _master_lab(**options) if args.master else open_lab(args.lab, **options)
        return ACTIONS[args.action](lab, args)
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _master_lab(**options):
    from .local.master import MasterLab

    return MasterLab(**options)


def _bring_up(lab, args, converge: bool) -> int:
    try:
        if not lab.exists():
            lab.create()
            print(f"created: {', '.join(lab.nodes)}; ssh-config {lab.ssh_config}")
        if converge:
            lab.converge()
            print("converged: etcd cluster healthy, watchers watching")
            for phase, seconds in getattr(lab, "phases", dict)().items():
                print(f"  {seconds:6.1f} s  {phase}")
    except BaseException:
        if not getattr(args, "keep_failed", False):
            print("lab: bringing the lab up failed; destroying it (--keep-failed keeps it)", file=sys.stderr)
            lab.destroy()
        raise
    return 0


def _create(lab, args) -> int:
    if lab.exists():
        raise LabError("the lab exists already: `converge` it, or `destroy` it first")
    return _bring_up(lab, args, converge=False)


def _converge(lab, args) -> int:
    return _bring_up(lab, args, converge=True)


def _verify(lab, args) -> int:
    return lab.verify(_strip_dashes(args.pytest_args))


def _ssh(lab, args) -> int:
    argv = lab.ssh_argv(args.node, _strip_dashes(args.command))
    os.execvp(argv[0], argv)


def _ssh_config(lab, args) -> int:
    print(lab.ssh_config)
    return 0


def _status(lab, args) -> int:
    print(format_status(lab.status()))
    return 0


def _destroy(lab, args) -> int:
    lab.destroy()
    print("destroyed")
    return 0


def _test(lab, args) -> int:
    lab.destroy()
    try:
        _bring_up(lab, args, converge=True)
        return lab.verify(_strip_dashes(args.pytest_args))
    finally:
        lab.destroy()


def _box() -> int:
    from . import box

    box.build()
    return 0


def _strip_dashes(words: list[str]) -> list[str]:
    return words[1:] if words[:1] == ["--"] else list(words)


ACTIONS = {
    "create": _create, "converge": _converge, "verify": _verify, "ssh": _ssh,
    "ssh-config": _ssh_config, "status": _status, "destroy": _destroy, "test": _test,
}

if __name__ == "__main__":
    sys.exit(main())
