"""pid 1 of a local lab node: its filesystem view, its name, its services.

Started by the lab inside the node's network namespace and fresh UTS,
mount and PID namespaces (`unshare --uts --mount --pid --fork`). It

1. gives the node private state: copy-on-write overlays over /etc,
   /usr/local, /var/lib, /var/cache, /var/log and /root whose upper layers
   live in the lab directory (or in a tmpfs where overlayfs refuses that
   filesystem), with root's dotfiles reset to Debian's; empty /tmp and
   /run; a sysfs that shows its own network;
2. sets the hostname and writes /etc/hostname, /etc/hosts (the lab's nodes)
   and an /etc/resolv.conf that fails fast (there is no DNS in the lab);
3. writes `ready` and then supervises services, like a very small systemd:
   the lab writes `services/NAME.json` (desired state, and a unit file or an
   argv) and sends SIGHUP; this process starts, stops and restarts them
   (`Restart=` of the unit), reaps every orphan of the node, and reports in
   `status/NAME.json`. Service output goes to `LOG_DIR/NAME.log`.

Killing this process kills the whole node (the kernel ends every process of
a PID namespace with its init), which is what `destroy` relies on.

Standard library only; run as `python3 -I nodeinit.py SPEC.json`.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from lab.local.units import UnitError, command, parse_unit  # noqa: E402

STOP_TIMEOUT = 10.0


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} nodeinit: {message}", file=sys.stderr, flush=True)


# -- the node's filesystem and name ------------------------------------------------


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def setup_filesystem(spec: dict) -> str:
    fs_dir = Path(spec["fs_dir"])
    fs_dir.mkdir(parents=True, exist_ok=True)
    mode = "lab-dir"
    try:
        overlays(spec["overlays"], fs_dir)
    except subprocess.CalledProcessError as exc:
        # overlayfs cannot put its upper layer on some filesystems (an
        # overlay root in a container): keep the layers in memory instead.
        log(f"overlay on {fs_dir} refused ({exc.stderr.strip()}); using a tmpfs")
        mount("-t", "tmpfs", "-o", "mode=0755", "trigger-lab", str(fs_dir))
        overlays(spec["overlays"], fs_dir)
        mode = "tmpfs"
    for target, perms in spec["fresh"].items():
        source = fs_dir / target.strip("/").replace("/", "-")
        source.mkdir(exist_ok=True)
        source.chmod(int(str(perms), 8))
        for keep in spec.get("keep", ()):
            if keep.startswith(target.rstrip("/") + "/"):
                inner = source / os.path.relpath(keep, target)
                inner.mkdir(parents=True, exist_ok=True)
                mount("--bind", keep, str(inner))
        mount("--rbind", str(source), target)
    for path, perms in (("/run/sshd", 0o755), ("/run/lock", 0o1777)):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, perms)
    if "/root" in spec["overlays"]:
        # root's shell starts as on a fresh Debian system, not with the host's
        # dotfiles (the rest of the host's /root stays: a virtualenv's Python
        # may live there)
        for name in (".bashrc", ".profile"):
            for source in (f"/usr/share/base-files/dot{name}", f"/etc/skel/{name}"):
                if os.path.exists(source):
                    _replace(f"/root/{name}", Path(source).read_text())
                    break
    try:  # a sysfs that shows this node's network devices, as `ip netns exec` does
        subprocess.run(["umount", "-l", "/sys"], check=True, capture_output=True)
        mount("-t", "sysfs", "sysfs", "/sys")
    except subprocess.CalledProcessError:
        pass
    return mode


def overlays(dirs: list[str], fs_dir: Path) -> None:
    for target in dirs:
        layer = fs_dir / target.strip("/").replace("/", "-")
        upper, work = layer / "upper", layer / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        mount("-t", "overlay", "overlay", "-o",
              f"lowerdir={target},upperdir={upper},workdir={work}", target)


def setup_identity(spec: dict) -> None:
    hostname = spec["hostname"]
    socket.sethostname(hostname)
    Path("/etc/hostname").write_text(hostname + "\n")
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{address}\t{name}" for address, name in spec["hosts"]]
    _replace("/etc/hosts", "\n".join(lines) + "\n")
    # No DNS server is reachable from the lab; a nameserver on loopback
    # refuses at once instead of timing out.
    _replace("/etc/resolv.conf", "# trigger lab: no DNS, names are in /etc/hosts\n"
             "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")


def _replace(path: str, text: str) -> None:
    if os.path.islink(path) or os.path.exists(path):
        os.unlink(path)
    Path(path).write_text(text)


# -- services ------------------------------------------------------------------


class Service:
    def __init__(self, name: str, desired: dict):
        self.name = name
        self.desired = desired
        self.pid: int | None = None
        self.started_with: dict | None = None  # desired + resolved command of the running process
        self.restarts = 0
        self.since: float | None = None  # wall-clock start of the running process
        self.last_exit: str | None = None
        self.error: str | None = None
        self.next_start = 0.0
        self.stop_deadline: float | None = None

    def resolve(self, base_env: dict) -> tuple[list[str], dict, str | None, str, float]:
        """argv, env, user, restart policy, restart delay."""
        d = self.desired
        if "unit" in d:
            unit = parse_unit(Path(d["unit"]).name, Path(d["unit"]).read_text())
            cmd = command(unit, socket.gethostname(), base_env, _read_or_none)
            return list(cmd.argv), cmd.env, cmd.user, unit.restart, max(unit.restart_sec, 0.1)
        env = {**base_env, **d.get("env", {})}
        return list(d["argv"]), env, d.get("user"), d.get("restart", "always"), d.get("restart_sec", 1.0)

    def status(self) -> dict:
        if self.pid is not None:
            state = "stopping" if self.stop_deadline else "running"
        elif self.desired.get("state") == "running" and self.error is None:
            state = "restarting" if self.restarts or self.last_exit else "starting"
        else:
            state = "failed" if self.error else "stopped"
        return {"name": self.name, "state": state, "pid": self.pid, "since": self.since,
                "restarts": self.restarts,
                "last_exit": self.last_exit, "error": self.error,
                "argv": (self.started_with or {}).get("argv")}


def _read_or_none(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None


def spawn(argv: list[str], env: dict, user: str | None, log_path: Path) -> int:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(log_fd, f"--- {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            os.chdir("/")
            if user and user != "root":
                entry = pwd.getpwnam(user)
                os.initgroups(user, entry.pw_gid)
                os.setgid(entry.pw_gid)
                os.setuid(entry.pw_uid)
                env = {**env, "HOME": entry.pw_dir, "USER": user, "LOGNAME": user,
                       "SHELL": entry.pw_shell}
            os.execve(argv[0], argv, env)
        except BaseException as exc:  # noqa: BLE001 - report anything, then die
            os.write(2, f"nodeinit: cannot start {argv[0]}: {exc}\n".encode())
        os._exit(127)
    os.close(log_fd)
    return pid


def should_restart(policy: str, status: int) -> bool:
    clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    by_signal = os.WIFSIGNALED(status)
    return {
        "always": True,
        "on-failure": not clean,
        "on-abnormal": by_signal,
        "on-abort": by_signal,
        "on-success": clean,
    }.get(policy, False)


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit {os.WEXITSTATUS(status)}"


class Supervisor:
    def __init__(self, control: Path, log_dir: Path, base_env: dict):
        self.control, self.log_dir, self.base_env = control, log_dir, base_env
        self.services: dict[str, Service] = {}
        self.reload_wanted = True
        self.terminating = False
        (control / "services").mkdir(parents=True, exist_ok=True)
        (control / "status").mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)

    def reload(self) -> None:
        self.reload_wanted = False
        seen = set()
        for path in sorted((self.control / "services").glob("*.json")):
            name = path.stem
            seen.add(name)
            try:
                desired = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                log(f"{name}: unreadable {path}: {exc}")
                continue
            service = self.services.get(name)
            if service is None:
                service = self.services[name] = Service(name, desired)
            else:
                service.desired = desired
            service.error = None
            service.next_start = 0.0
        for name, service in self.services.items():
            if name not in seen:
                service.desired = {**service.desired, "state": "stopped"}
        self.write_status()

    def step(self) -> float:
        """Start, stop and restart what needs it; return seconds until the next timer."""
        now = time.monotonic()
        wait = 1.0
        for service in self.services.values():
            want_running = service.desired.get("state") == "running" and not self.terminating
            if service.pid is None:
                if want_running and service.error is None:
                    if now >= service.next_start:
                        self.start(service)
                    else:
                        wait = min(wait, service.next_start - now)
                continue
            if not want_running or self.changed(service):
                if service.stop_deadline is None:
                    self.signal(service, signal.SIGTERM)
                    service.stop_deadline = now + STOP_TIMEOUT
                elif now >= service.stop_deadline:
                    self.signal(service, signal.SIGKILL)
                wait = min(wait, 0.2)
        return max(wait, 0.01)

    def changed(self, service: Service) -> bool:
        """A running service whose unit or settings changed restarts (as after daemon-reload)."""
        try:
            argv, env, user, _, _ = service.resolve(self.base_env)
        except (OSError, UnitError):
            return False
        now = {"argv": argv, "env": env, "user": user}
        return service.started_with is not None and now != {
            k: service.started_with[k] for k in ("argv", "env", "user")}

    def start(self, service: Service) -> None:
        try:
            argv, env, user, _, _ = service.resolve(self.base_env)
            service.pid = spawn(argv, env, user, self.log_dir / f"{service.name}.log")
        except (OSError, UnitError) as exc:
            service.error = str(exc)
            log(f"{service.name}: cannot start: {exc}")
        else:
            service.started_with = {"argv": argv, "env": env, "user": user}
            service.since = time.time()
            service.stop_deadline = None
            log(f"{service.name}: started pid {service.pid}: {' '.join(argv)}")
        self.write_status()

    def signal(self, service: Service, sig: int) -> None:
        try:
            os.killpg(service.pid, sig)
        except ProcessLookupError:
            pass

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for service in self.services.values():
                if service.pid == pid:
                    self.exited(service, status)
                    break

    def exited(self, service: Service, status: int) -> None:
        service.pid = None
        service.since = None
        service.last_exit = describe(status)
        stopping = service.stop_deadline is not None
        service.stop_deadline = None
        log(f"{service.name}: {service.last_exit}")
        try:
            _, _, _, policy, delay = service.resolve(self.base_env)
        except (OSError, UnitError):
            policy, delay = "no", 1.0
        if stopping:
            service.next_start = 0.0  # stopped on purpose (or to apply a change)
        elif service.desired.get("state") == "running" and should_restart(policy, status):
            service.restarts += 1
            service.next_start = time.monotonic() + delay
        else:
            service.desired = {**service.desired, "state": "stopped"}
        self.write_status()

    def write_status(self) -> None:
        for service in self.services.values():
            path = self.control / "status" / f"{service.name}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(service.status()))
            tmp.replace(path)

    def run(self) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end)

        def on_hup(*_):
            self.reload_wanted = True

        def on_term(*_):
            self.terminating = True

        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while True:
            self.reap()
            if self.reload_wanted:
                self.reload()
            wait = self.step()
            if self.terminating and not any(s.pid for s in self.services.values()):
                log("terminated")
                return
            try:
                select.select([read_end], [], [], wait)
                os.read(read_end, 4096)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    raise


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[1]).read_text())
    control = Path(spec["control_dir"])
    mode = setup_filesystem(spec)
    setup_identity(spec)
    supervisor = Supervisor(control, Path(spec["log_dir"]), spec["base_env"])
    (control / "ready").write_text(json.dumps({"fs": mode, "hostname": spec["hostname"]}))
    log(f"{spec['hostname']} ready (state layers: {mode})")
    supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
