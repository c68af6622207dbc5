"""The local lab: three namespaced nodes on this machine (needs root).

Each node is a process tree in a network namespace of its own plus fresh
UTS, mount and PID namespaces, whose PID 1 is nodeinit.py. The nodes'
network is a bridge inside a hub namespace; nothing of it exists outside
the lab's namespaces:

    hub namespace tlab-NAME-hub:   br0 ── vnode1, vnode2, vnode3 (veth)
    node namespace tlab-NAME-nodeN:          eth0 172.30.56.1N/24, lo

The host reaches a node's sshd through a ProxyCommand that relays into the
node's namespace (relay.py), as Vagrant forwards a port into a VM; no
address of the lab is ever configured on the host.

Everything lives under the lab directory (default
/var/tmp/trigger-lab/NAME, or $TRIGGER_LAB_DIR/NAME): keys, configs, the
nodes' state layers, logs, and state.json, which lists the namespaces and
processes made so that `destroy` can clean up after a crash. `destroy` also
finds namespaces by their name prefix and processes by namespace, so even a
lab whose state file was lost goes away completely.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..base import NODE_PATH, REPO, SERVICES, Lab, LabError
from . import wheels

HERE = Path(__file__).resolve().parent
NODEINIT = HERE / "nodeinit.py"
RELAY = HERE / "relay.py"
DEFAULT_ROOT = Path("/var/tmp/trigger-lab")
DEFAULT_SUBNET = "172.30.56"  # a /24 that only ever exists inside the lab's namespaces
ETCD_MEMBERS = 3  # however many nodes, etcd is a cluster of three on the first three
MAX_NODES = 24  # measured: 17 nodes take ~1 GiB and ~1 min to converge (lab/README.md)
OVERLAYS = ["/etc", "/usr/local", "/var/lib", "/var/cache", "/var/log", "/root"]
FRESH = {"/tmp": "1777", "/run": "0755"}
PROGRAMS = {  # program: Debian package
    "ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux", "mount": "mount",
    "sshd": "openssh-server", "ssh": "openssh-client", "ssh-keygen": "openssh-client",
    "etcd": "etcd-server", "etcdctl": "etcd-client", "tsp": "task-spooler", "puppet": "puppet",
    "pgrep": "procps",  # the tests look for processes on the nodes
}
UNITS = {  # service: its unit on the node (written by the Debian package or the module)
    "etcd": "/lib/systemd/system/etcd.service",
    "trigger-watch": "/etc/systemd/system/trigger-watch.service",
}


def missing_programs() -> dict[str, str]:
    """Programs the local lab needs that are not installed: {program: package}."""
    found = {}
    for program, package in PROGRAMS.items():
        if shutil.which(program) is None and shutil.which(program, path="/usr/sbin:/sbin") is None:
            found[program] = package
    return found


class LocalLab(Lab):
    backend = "local"

    def __init__(self, name: str = "dev", root: str | Path | None = None,
                 subnet: str = DEFAULT_SUBNET, venv: str | Path | None = None,
                 nodes: int | None = None):
        """`nodes`: how many (3 to MAX_NODES); default: as many as the lab has, else 3."""
        if not re.fullmatch(r"[a-z0-9]{1,8}", name):
            raise LabError(f"lab name {name!r}: use 1 to 8 lower-case letters or digits")
        if not re.fullmatch(r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})", subnet):
            raise LabError(f"subnet {subnet!r}: give the first three octets of a /24, like 172.30.56")
        self.name = name
        self.subnet = subnet
        root = Path(root or os.environ.get("TRIGGER_LAB_DIR") or DEFAULT_ROOT)
        self.dir = root / name
        self.state_file = self.dir / "state.json"
        if nodes is None:
            # the trigger nodes the lab has (not the master lab's server)
            nodes = len([n for n in self._state().get("nodes", {}) if n.startswith("node")]) or 3
        if not ETCD_MEMBERS <= nodes <= MAX_NODES:
            raise LabError(f"a local lab has {ETCD_MEMBERS} to {MAX_NODES} nodes, not {nodes}")
        self.nodes = tuple(f"node{i}" for i in range(1, nodes + 1))
        self.venv = Path(venv or os.environ.get("TRIGGER_LAB_VENV") or REPO / ".venv")
        self._children: list[subprocess.Popen] = []

    # -- names and places ------------------------------------------------------

    @property
    def etcd_members(self) -> tuple[str, ...]:
        return self.nodes[:ETCD_MEMBERS]

    @property
    def machines(self) -> tuple[str, ...]:
        """Every namespaced machine of the lab: the trigger nodes, and any other
        the lab runs beside them (the master lab's Puppet server)."""
        return self.nodes

    def check_node(self, node: str) -> str:
        if node not in self.machines:
            raise LabError(f"no node {node!r} in this lab: nodes are {', '.join(self.machines)}")
        return node

    @property
    def hub(self) -> str:
        return f"tlab-{self.name}-hub"

    def namespace(self, node: str) -> str:
        return f"tlab-{self.name}-{self.check_node(node)}"

    def address(self, node: str) -> str:
        return f"{self.subnet}.{11 + self.machines.index(self.check_node(node))}"

    def node_dir(self, node: str) -> Path:
        return self.dir / node

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh" / "ssh_config"

    def pytest_options(self) -> list[str]:
        return [f"--lab-name={self.name}"]

    # -- state file ------------------------------------------------------------

    def _state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise LabError(f"{self.state_file} is damaged ({exc}); run destroy") from None

    def _save(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)

    def _record(self, **changes) -> dict:
        state = self._state()
        for key, value in changes.items():
            if isinstance(value, list):
                state[key] = sorted(set(state.get(key, [])) | set(value))
            elif isinstance(value, dict):
                state.setdefault(key, {}).update(value)
            else:
                state[key] = value
        self._save(state)
        return state

    # -- create ----------------------------------------------------------------

    def create(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the local lab needs root (network namespaces, mounts)")
        missing = missing_programs()
        if missing:
            raise LabError("missing programs: " + ", ".join(
                f"{p} (Debian package {pkg})" for p, pkg in sorted(missing.items())))
        if not (self.venv / "bin" / "trigger").exists():
            raise LabError(f"no trigger in {self.venv}/bin: run scripts/setup.sh")
        if self.exists():
            raise LabError(f"lab {self.name!r} exists ({self.dir}): use it, or destroy it first")
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(mode=0o755)
        self._save({"backend": "local", "name": self.name, "dir": str(self.dir),
                    "subnet": self.subnet, "created_at": time.time(), "phase": "creating",
                    "namespaces": [], "nodes": {}})
        self._make_keys()
        self._make_network()
        for node in self.machines:
            self._start_node(node)
        for node in self.machines:
            self._wait_ready(node)
        self._write_ssh_config()
        for node in self.machines:
            self._set_service(node, "sshd", {
                "state": "running",
                "argv": ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.node_dir(node) / "ssh/sshd_config")],
                "restart": "on-failure", "restart_sec": 1,
            })
        for node in self.machines:
            self._wait_ssh(node)
        self._record(phase="created")

    def _make_keys(self) -> None:
        ssh_dir = self.dir / "ssh"
        ssh_dir.mkdir(mode=0o700)
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        _check([*keygen, "-C", f"trigger-lab-{self.name}", "-f", str(ssh_dir / "id_ed25519")])
        (ssh_dir / "authorized_keys").write_text((ssh_dir / "id_ed25519.pub").read_text())
        known = []
        for node in self.machines:
            node_ssh = self.node_dir(node) / "ssh"
            node_ssh.mkdir(parents=True, mode=0o700)
            key = node_ssh / "ssh_host_ed25519_key"
            _check([*keygen, "-C", f"{node}.trigger-lab-{self.name}", "-f", str(key)])
            key_type, key_text = Path(f"{key}.pub").read_text().split()[:2]
            known.append(f"{node} {key_type} {key_text}")
            (node_ssh / "sshd_config").write_text(self._sshd_config(node, key))
        (ssh_dir / "known_hosts").write_text("\n".join(known) + "\n")

    def _sshd_config(self, node: str, host_key: Path) -> str:
        env = self.node_env(node)
        set_env = " ".join(f"{k}={env[k]}" for k in ("TS_SOCKET", "ETCDCTL_ENDPOINTS", "ETCDCTL_API"))
        return f"""\
# sshd of node {node} in trigger lab {self.name!r} (generated by lab/local)
ListenAddress {self.address(node)}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile /run/sshd.pid
AuthorizedKeysFile {self.dir / 'ssh/authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
MaxStartups 64
MaxSessions 64
SetEnv {set_env}
Subsystem sftp /usr/lib/openssh/sftp-server
"""

    def _make_network(self) -> None:
        self._record(namespaces=[self.hub])
        _check(["ip", "netns", "add", self.hub])
        _check(["ip", "-n", self.hub, "link", "set", "lo", "up"])
        _check(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        _check(["ip", "-n", self.hub, "link", "set", "br0", "up"])
        for node in self.machines:
            ns = self.namespace(node)
            self._record(namespaces=[ns])
            _check(["ip", "netns", "add", ns])
            # Both ends are made inside the namespaces: no link ever appears on the host.
            _check(["ip", "link", "add", "name", f"v{node}", "netns", self.hub, "type", "veth",
                    "peer", "name", "eth0", "netns", ns])
            _check(["ip", "-n", self.hub, "link", "set", f"v{node}", "master", "br0", "up"])
            _check(["ip", "-n", ns, "link", "set", "lo", "up"])
            _check(["ip", "-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", "eth0"])
            _check(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def _start_node(self, node: str) -> None:
        node_dir = self.node_dir(node)
        (node_dir / "log").mkdir(parents=True, exist_ok=True)
        spec = {
            "hostname": node,
            "hosts": [[self.address(n), n] for n in self.machines],
            "fs_dir": str(node_dir / "fs"),
            "overlays": OVERLAYS,
            "fresh": FRESH,
            # The project and its Python stay visible even when they live
            # under a directory the node gets fresh (a clone in /tmp).
            "keep": sorted({str(HERE.parents[1]), sys.prefix, sys.base_prefix}),
            "control_dir": str(node_dir / "init"),
            "log_dir": str(node_dir / "log"),
            "base_env": {"PATH": NODE_PATH, "LANG": "C.UTF-8"},
        }
        spec_path = node_dir / "nodeinit.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        with open(node_dir / "log" / "nodeinit.log", "ab") as log:
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.namespace(node)}",
                 "unshare", "--uts", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
                 "--propagation", "private", sys.executable, "-I", str(NODEINIT), str(spec_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", start_new_session=True)
        self._children.append(proc)
        self._record(nodes={node: {"unshare": proc.pid, "unshare_start": _start_time(proc.pid)}})

    def _wait_ready(self, node: str, timeout: float = 30.0) -> None:
        info = self._state()["nodes"][node]
        ready = self.node_dir(node) / "init" / "ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "init" not in info:
                children = _children(info["unshare"])
                if children:
                    info = {**info, "init": children[0], "init_start": _start_time(children[0])}
                    self._record(nodes={node: info})
            if ready.exists():
                return
            if not _alive(info["unshare"], info.get("unshare_start")):
                break
            time.sleep(0.05)
        log = (self.node_dir(node) / "log" / "nodeinit.log").read_text()[-2000:]
        raise LabError(f"{node} did not start; its nodeinit.log ends:\n{log}")

    def _write_ssh_config(self) -> None:
        ssh_dir = self.dir / "ssh"
        nsenter = shutil.which("nsenter")
        lines = [f"# trigger lab {self.name!r} (local), generated by lab/local.",
                 f"# testinfra: --hosts=ssh://node1 --ssh-config={self.ssh_config}", ""]
        for node in self.machines:
            lines += [
                f"Host {node}",
                f"  HostName {self.address(node)}",
                f"  HostKeyAlias {node}",
                # into the node's network, then to its sshd on loopback: a node
                # whose lab link is down can still be reached, like a VM's console
                f"  ProxyCommand {nsenter} --net=/run/netns/{self.namespace(node)} "
                f"{sys.executable} -I {RELAY} 127.0.0.1 22",
                "",
            ]
        lines += [
            f"Host {' '.join(self.machines)}",
            "  User root",
            f"  IdentityFile {ssh_dir / 'id_ed25519'}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {ssh_dir / 'known_hosts'}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "  LogLevel ERROR",
            f"  ControlPath {ssh_dir}/cm-%n",
            "  ControlPersist 60s",
            "",
        ]
        self.ssh_config.write_text("\n".join(lines))

    def _wait_ssh(self, node: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            done = subprocess.run(["ssh", "-F", str(self.ssh_config), "-o", "ControlMaster=no",
                                   node, "hostname"], capture_output=True, text=True, timeout=15)
            if done.returncode == 0 and done.stdout.strip() == node:
                return
            last = done.stderr.strip()
            time.sleep(0.2)
        raise LabError(f"{node}: no SSH after {timeout:.0f}s: {last}")

    # -- converge --------------------------------------------------------------

    def converge(self, run_cmd: str | None = None, watch_hosts: dict[str, str] | None = None) -> None:
        """Apply node.pp everywhere; `run_cmd` replaces the watchers' `puppet apply`, and
        `watch_hosts` ({node: name}) the host names their watchers serve (default the node's)."""
        self._require_up()
        # Each node installs `trigger` with trigger::install from a wheel of
        # this checkout; the wheelhouse spares the nodes a package index.
        try:
            wheel = wheels.project_wheel(self.dir / "wheels")
            wheelhouse = wheels.wheelhouse()
        except (wheels.WheelError, OSError, subprocess.SubprocessError) as exc:
            raise LabError(f"cannot build the wheels the nodes install: {exc}") from None
        facts = {
            "FACTER_trigger_lab_nodes": ",".join(f"{n}={self.address(n)}" for n in self.nodes),
            "FACTER_trigger_lab_wheel": str(wheel),
            "FACTER_trigger_lab_wheelhouse": str(wheelhouse),
            "FACTER_trigger_lab_members": ",".join(self.etcd_members),
            "FACTER_trigger_lab_module": str(REPO / "puppet" / "trigger"),
        }
        if run_cmd:
            facts["FACTER_trigger_lab_run_cmd"] = run_cmd
        envs = {node: {**facts, **self._watch_host_fact(node, watch_hosts)} for node in self.nodes}
        apply = ["puppet", "apply", "--detailed-exitcodes", "--color=false",
                 "--modulepath", str(REPO / "puppet"), str(REPO / "lab" / "puppet" / "node.pp")]
        # A few at a time: every `puppet apply` wants a core for seconds.
        with concurrent.futures.ThreadPoolExecutor(min(len(self.nodes), 6)) as pool:
            results = dict(zip(self.nodes, pool.map(
                lambda node: self.run(node, apply, env=envs[node], timeout=300), self.nodes)))
        for node, done in results.items():
            (self.node_dir(node) / "log" / "converge.log").write_text(done.stdout + done.stderr)
            if done.returncode not in (0, 2):
                raise LabError(f"{node}: puppet apply of lab/puppet/node.pp exited {done.returncode}:\n"
                               + _tail(done.stdout + done.stderr))
        # No systemd in a namespace: the node's init starts the units the
        # package and the module wrote, as systemd would.
        # etcd first (the members of a new cluster wait for each other), then
        # the watchers, as the unit's After=etcd.service orders them.
        for node in self.etcd_members:
            self._set_service(node, "etcd", {"state": "running", "unit": UNITS["etcd"]})
        self.wait_etcd_healthy()
        for node in self.nodes:
            self.run(node, ["tsp"], check=True)  # starts the node's task-spooler server
            self._set_service(node, "trigger-watch", {"state": "running", "unit": UNITS["trigger-watch"]})
        for node in self.nodes:
            self._wait_watching(node)
        self._record(phase="converged")

    def _watch_host_fact(self, node: str, watch_hosts: dict[str, str] | None) -> dict[str, str]:
        if not watch_hosts or node not in watch_hosts:
            return {}
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}", watch_hosts[node]):
            raise LabError(f"watch host for {node}: {watch_hosts[node]!r} is not a host name")
        return {"FACTER_trigger_lab_watch_host": watch_hosts[node]}

    def _wait_watching(self, node: str, timeout: float = 60.0) -> None:
        log = self.node_dir(node) / "log" / "trigger-watch.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.service_status(node, "trigger-watch")
            if status.get("state") in ("failed", "stopped") or status.get("restarts", 0) >= 3:
                break  # it will not come up by waiting
            text = log.read_text(errors="replace") if log.exists() else ""
            current = text[text.rfind("--- "):]  # what the running watcher wrote
            up_for = time.time() - (status.get("since") or time.time())
            if status.get("state") == "running" and ("watching" in current or up_for > 3) \
                    and _settled(current, log.stat().st_mtime):
                return
            time.sleep(0.2)
        raise LabError(f"{node}: the watcher is not watching after {timeout:.0f}s; "
                       f"{log} ends:\n{_tail(log.read_text(errors='replace') if log.exists() else '')}")

    # -- running things on nodes ---------------------------------------------------

    def run(self, node: str, argv: list[str], input: str | None = None, timeout: float = 120,
            check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        init = self._init_pid(node)
        full_env = {**self.node_env(node), **(env or {})}
        command = ["nsenter", "-t", str(init), "-m", "-u", "-n", "-p", "--wd=/", "--",
                   "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in full_env.items()), *argv]
        done = _run(command, input, timeout)
        if check and done.returncode != 0:
            raise LabError(f"{node}: {shlex.join(argv)} exited {done.returncode}:\n"
                           + _tail(done.stdout + done.stderr))
        return done

    def _init_pid(self, node: str) -> int:
        info = self._state().get("nodes", {}).get(self.check_node(node), {})
        pid = info.get("init")
        if not pid or not _alive(pid, info.get("init_start")):
            raise LabError(f"{node} of lab {self.name!r} is not running: create the lab first")
        return pid

    def _require_up(self) -> None:
        for node in self.machines:
            self._init_pid(node)

    def _set_service(self, node: str, name: str, desired: dict) -> None:
        services = self.node_dir(node) / "init" / "services"
        services.mkdir(parents=True, exist_ok=True)
        tmp = services / f".{name}.tmp"
        tmp.write_text(json.dumps(desired))
        tmp.replace(services / f"{name}.json")
        os.kill(self._init_pid(node), signal.SIGHUP)

    def service_status(self, node: str, name: str) -> dict:
        try:
            return json.loads((self.node_dir(node) / "init" / "status" / f"{name}.json").read_text())
        except (FileNotFoundError, ValueError):
            return {"state": "unknown"}

    def service(self, node: str, name: str, action: str) -> None:
        if name not in UNITS:
            raise LabError(f"no service {name!r}: services are {', '.join(UNITS)}")
        if action not in ("start", "stop", "restart"):
            raise LabError(f"service action {action!r}: use start, stop or restart")
        if action in ("stop", "restart"):
            self._set_service(node, name, {"state": "stopped", "unit": UNITS[name]})
            self._wait_service(node, name, ("stopped",))
        if action in ("start", "restart"):
            self._set_service(node, name, {"state": "running", "unit": UNITS[name]})
            self._wait_service(node, name, ("running",))

    def _wait_service(self, node: str, name: str, states: tuple[str, ...], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.service_status(node, name)
            if status.get("state") in states:
                return
            if status.get("state") == "failed":
                raise LabError(f"{node}: {name} failed: {status.get('error')}")
            time.sleep(0.05)
        raise LabError(f"{node}: {name} not {'/'.join(states)} after {timeout}s: {status}")

    def link(self, node: str, up: bool) -> None:
        # The hub's end of the node's cable: the node sees its carrier go.
        _check(["ip", "-n", self.hub, "link", "set", f"v{self.check_node(node)}",
                "up" if up else "down"])

    # -- status and destroy -------------------------------------------------------

    def status(self) -> dict[str, dict]:
        state = self._state()
        namespaces = set(_netns_list())
        result = {}
        for node in self.machines:
            info = state.get("nodes", {}).get(node, {})
            alive = bool(info.get("init")) and _alive(info["init"], info.get("init_start"))
            exists = alive or self.namespace(node) in namespaces or bool(state)
            services = {}
            if alive:
                for name in ("sshd", *SERVICES):
                    s = self.service_status(node, name)
                    if s.get("state") != "unknown":
                        services[name] = s["state"] + (f" ({s['restarts']} restarts)" if s.get("restarts") else "")
            result[node] = {"exists": exists, "state": "up" if alive else ("broken" if exists else "absent"),
                            "address": self.address(node), "services": services,
                            "phase": state.get("phase")}
        return result

    def destroy(self) -> None:
        state = self._state()
        prefix = f"tlab-{self.name}-"
        namespaces = set(state.get("namespaces", [])) | {n for n in _netns_list() if n.startswith(prefix)}
        if self.ssh_config.exists():
            for node in self.machines:  # close ssh control masters politely first
                subprocess.run(["ssh", "-F", str(self.ssh_config), "-O", "exit", node],
                               capture_output=True, timeout=10)
        for _ in range(50):
            pids = self._lab_pids(state, namespaces)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._reap_children()
            time.sleep(0.1)
        else:
            raise LabError(f"processes of lab {self.name!r} would not die: {sorted(pids)}")
        self._reap_children()
        for ns in sorted(namespaces):
            if ns in _netns_list():
                _check(["ip", "netns", "delete", ns])
        if self.dir.exists():
            shutil.rmtree(self.dir)
        _remove_stale_lock(self.dir.parent / f".{self.name}.lock")
        try:
            self.dir.parent.rmdir()  # only when no other lab is there
        except OSError:
            pass

    def _lab_pids(self, state: dict, namespaces: set[str]) -> set[int]:
        """Every process of the lab: the nodes' inits, everything in their network, ssh masters."""
        pids = set()
        for info in state.get("nodes", {}).values():
            for key in ("unshare", "init"):
                if info.get(key) and _alive(info[key], info.get(f"{key}_start")):
                    pids.add(info[key])
        for ns in namespaces:
            done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            pids |= {int(p) for p in done.stdout.split()}
        marker = str(self.dir).encode() + b"/"
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if marker in (entry / "cmdline").read_bytes():
                        pids.add(int(entry.name))
                except OSError:
                    pass
        mine = {os.getpid(), os.getppid()}
        return {p for p in pids if p not in mine and _alive(p)}

    def _reap_children(self) -> None:
        for proc in self._children:
            proc.poll()
        self._children = [p for p in self._children if p.returncode is None]


@contextlib.contextmanager
def claimed_lab(prefix: str = "pytest", root: str | Path | None = None, lab_class=None, **options):
    """A LocalLab named PREFIX, PREFIX2, ... that no other live process holds.

    A test session holds its lab's name with a lock on ROOT/.NAME.lock for as
    long as it runs, so two sessions at once get two labs instead of
    destroying each other's; a lab whose holder died (the lock went with it)
    is the one the next session takes over and cleans up.
    """
    root = Path(root or os.environ.get("TRIGGER_LAB_DIR") or DEFAULT_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    for number in range(1, 10):
        name = prefix if number == 1 else f"{prefix}{number}"
        lock_path = root / f".{name}.lock"
        lock = open(lock_path, "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        try:
            yield (lab_class or LocalLab)(name=name, root=root, **options)
        finally:
            lock_path.unlink(missing_ok=True)
            lock.close()
            try:
                root.rmdir()  # only when nothing else is there
            except OSError:
                pass
        return
    raise LabError(f"nine test sessions hold labs in {root}; wait for one to finish")


# -- small helpers ----------------------------------------------------------------


def _remove_stale_lock(path: Path) -> None:
    """Remove the lock of a test session that died (one alive still holds it)."""
    try:
        with open(path) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
    except (FileNotFoundError, BlockingIOError):
        pass


def _check(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"{shlex.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _run(command: list[str], input: str | None, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(command, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n(killed after {timeout}s)"
        return subprocess.CompletedProcess(command, -9, out, err)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _netns_list() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks: tells a pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _alive(pid: int, start_time: int | None = None) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat[stat.rindex(")") + 2] == "Z":
        return False
    return start_time is None or _start_time(pid) == start_time


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _settled(watch_log: str, modified: float) -> bool:
    """The watcher logs "watching" before its first read, and nothing when a
    read succeeds: it got through once the last retry it announced is past."""
    last = watch_log.strip().splitlines()[-1]
    match = re.search(r"retrying in ([\d.]+)s", last)
    quiet = float(match.group(1)) + 1.5 if match else 1.0
    return modified < time.time() - quiet


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
