"""etcd's own users and roles for trigger: who may read and write which keys.

Theory of operation
-------------------
etcd grants permissions to roles and roles to users; a permission is READ,
WRITE or READWRITE on one key or on a key range (a prefix). Deleting a key
needs WRITE. With `P` the key prefix (default /puppet_trigger/events):

    role trigger-node-<host>      user <host>: one per node, its watcher and runs
      readwrite P/hosts/<host>/       its inbox (read, acknowledge = delete) and its run records
      readwrite P/done/<host>/        its finished run records
      readwrite P/quarantine/<host>/  where its watcher moves a corrupt inbox value
      readwrite P/members/<host>      its member key (this one key)
      readwrite P/elections/          candidacies; etcd cannot grant "keys ending in /<host>"
      readwrite P/slots/              slots of triggers with max_concurrent, taken by runs

    role trigger-firer            users named by --firers (a node that fires is one)
      read      P/                    status, history, fire --wait, --hosts role:NAME
      readwrite [P/hosts/<host>/, P/hosts/<host>/lock/)      per host: the inbox keys,
      readwrite [P/hosts/<host>/lock0, P/hosts/<host>/runs/) every key but runs/ and
      readwrite [P/hosts/<host>/runs0, P/hosts/<host>0)      lock/, so a firer can
                                      neither forge run records nor hold the run lock
      readwrite P/fires/              fire records for `trigger history`
      readwrite P/refused/            fires refused by the loop TTL

The trailing `/` matters: node `web1` gets `P/hosts/web1/`, a range that
does not include `P/hosts/web10/`. A range end is exclusive, and "0" is the
byte after "/": [K/, K0) is every key starting with K/.

`setup` creates the roles, the users (with random passwords, written to
`--password-dir` or printed), the root user etcd needs before it enables
authentication, and then enables it. Run again with more hosts it adds
them: roles and grants are set again (idempotent), existing users keep
their passwords. It never removes anything.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .layout import Layout
from .records import BadRecord, check_host

FIRER_ROLE = "trigger-firer"
NODE_ROLE_PREFIX = "trigger-node-"
ROOT = "root"  # etcd's own: the user and role that may enable authentication

READ, WRITE, READWRITE = "read", "write", "readwrite"


@dataclass(frozen=True)
class Permission:
    """`kind` on `key`, on every key starting with `key` if `prefix`, or on
    the keys from `key` up to (not including) `end` if `end` is given."""

    kind: str
    key: str
    prefix: bool = True
    end: str = ""

    def describe(self) -> str:
        if self.end:
            return f"{self.kind:<9} [{self.key}, {self.end})"
        return f"{self.kind:<9} {self.key}{'' if self.prefix else '  (this key only)'}"


def _after(prefix: str) -> str:
    """The first key past every key starting with `prefix` (which ends in '/')."""
    return prefix[:-1] + "0"


@dataclass(frozen=True)
class Plan:
    """The roles with their permissions, and the roles of each user."""

    roles: dict[str, tuple[Permission, ...]]
    users: dict[str, tuple[str, ...]]

    def describe(self) -> list[str]:
        lines = []
        for role, permissions in self.roles.items():
            lines.append(f"role {role}")
            lines += [f"  {p.describe()}" for p in permissions]
        for user, roles in self.users.items():
            lines.append(f"user {user}: {', '.join(roles)}")
        return lines


def node_role(host: str) -> str:
    return NODE_ROLE_PREFIX + host


def node_permissions(layout: Layout, host: str) -> tuple[Permission, ...]:
    p = layout.prefix
    return (
        Permission(READWRITE, layout.host_prefix(host)),
        Permission(READWRITE, layout.done_prefix(host)),
        Permission(READWRITE, f"{p}/quarantine/{host}/"),
        Permission(READWRITE, layout.member_key(host), prefix=False),
        Permission(READWRITE, f"{p}/elections/"),
        Permission(READWRITE, f"{p}/slots/"),
    )


def firer_permissions(layout: Layout, hosts: list[str]) -> tuple[Permission, ...]:
    p = layout.prefix
    inboxes = []
    for host in hosts:
        # Every key of the host but its run records and its run lock: a firer
        # can neither forge a run nor hold a host's runs back.
        inbox, runs = layout.host_prefix(host), layout.runs_prefix(host)
        lock = layout.run_lock_key(host).rsplit("/", 1)[0] + "/"
        inboxes += [Permission(READWRITE, inbox, end=lock),
                    Permission(READWRITE, _after(lock), end=runs),
                    Permission(READWRITE, _after(runs), end=_after(inbox))]
    return (
        Permission(READ, f"{p}/"),
        *inboxes,
        Permission(READWRITE, layout.fires_prefix()),
        Permission(READWRITE, f"{p}/refused/"),
    )


def _user(name: str, what: str) -> str:
    try:
        check_host(name)
    except BadRecord:
        raise BadRecord(f"bad {what} {name!r}: use letters, digits, '.', '-' and '_' only") from None
    if name == ROOT:
        raise BadRecord(f"{what} {name!r} would be etcd's root user; choose another name")
    return name


def plan(layout: Layout, hosts: list[str], firers: list[str] = ()) -> Plan:
    """The roles and users for these nodes and firers (no IO)."""
    if not hosts and not firers:
        raise BadRecord("nothing to set up: give --hosts (and --firers)")
    hosts = list(dict.fromkeys(_user(h, "host") for h in hosts))
    firers = list(dict.fromkeys(_user(f, "firer") for f in firers))
    roles: dict[str, tuple[Permission, ...]] = {}
    users: dict[str, tuple[str, ...]] = {}
    # Always, so that hosts set up later are open to the firers set up before.
    roles[FIRER_ROLE] = firer_permissions(layout, hosts)
    for host in hosts:
        roles[node_role(host)] = node_permissions(layout, host)
        users[host] = (node_role(host),)
    for firer in firers:
        users[firer] = users.get(firer, ()) + (FIRER_ROLE,)
    return Plan(roles, users)


# -- carrying it out on etcd -------------------------------------------------------


@dataclass
class SetupReport:
    created_users: dict[str, str]  # user -> password, only those created now
    existing_users: list[str]
    root_created: bool
    enabled: bool


def setup(store, layout: Layout, the_plan: Plan, enable: bool = True,
          root_password: str | None = None, password=lambda user: secrets.token_urlsafe(18),
          created=lambda user, secret: None) -> SetupReport:
    """Create the plan's roles, grants and users on etcd (an EtcdStore), the
    root user if missing, and enable authentication.

    `created(user, password)` is called as soon as a user exists, so its
    password is kept even if a later step fails. Before authentication is
    enabled anyone may do this; after, only root (open the store with user
    root). Raises StoreError with etcd's reason.
    """
    from .store.etcd import EtcdError, prefix_range_end, rpc
    from pyetcd.etcdrpc import auth_pb2

    kinds = {READ: auth_pb2.Permission.READ, WRITE: auth_pb2.Permission.WRITE,
             READWRITE: auth_pb2.Permission.READWRITE}

    def call(method, request, tolerate: str = ""):
        try:
            return store.auth_call(method, request)
        except EtcdError as exc:
            if tolerate and tolerate in exc.details:
                return None
            raise

    for role, permissions in the_plan.roles.items():
        call("RoleAdd", rpc.AuthRoleAddRequest(name=role), tolerate="role name already exists")
        for p in permissions:
            key = p.key.encode()
            end = p.end.encode() if p.end else prefix_range_end(key) if p.prefix else b""
            perm = auth_pb2.Permission(permType=kinds[p.kind], key=key, range_end=end)
            call("RoleGrantPermission", rpc.AuthRoleGrantPermissionRequest(name=role, perm=perm))
    made, existing = {}, []
    for user, roles in the_plan.users.items():
        secret = password(user)
        if call("UserAdd", rpc.AuthUserAddRequest(name=user, password=secret),
                tolerate="user name already exists") is None:
            existing.append(user)
        else:
            made[user] = secret
            created(user, secret)
        for role in roles:
            call("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=user, role=role))
    root_created = False
    if enable:
        secret = root_password or password(ROOT)
        if call("UserAdd", rpc.AuthUserAddRequest(name=ROOT, password=secret),
                tolerate="user name already exists") is not None:
            made[ROOT] = secret
            created(ROOT, secret)
            root_created = True
        call("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=ROOT, role=ROOT))
        call("AuthEnable", rpc.AuthEnableRequest())
    return SetupReport(made, existing, root_created, enable)


def write_passwords(directory: str, passwords: dict[str, str]) -> list[Path]:
    """DIR/<user>.password, mode 0600 in a directory only its owner reads."""
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for user, secret in passwords.items():
        target = path / f"{user}.password"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        os.chmod(target, 0o600)
        written.append(target)
    return written
