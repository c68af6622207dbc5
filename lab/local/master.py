"""The master lab: the local lab's nodes as agents of a real Puppet server.

One more namespaced machine, `puppet` (the name agents look for by
default), runs Puppet Server with the lab's CA, PuppetDB on PostgreSQL and
storeconfigs, all from Debian's packages and started by the node's init
like the other services:

    puppet   postgres, puppetserver (JVM), puppetdb (JVM)   172.30.56.1N after the nodes
    node1..  etcd (three), trigger watch, task-spooler, and the agent daemon
             `puppet agent --no-daemonize`; a triggered run is
             `puppet agent --test --waitforlock 1 --maxwaitforlock 600`

The nodes are converged by lab/puppet/node.pp exactly as in the masterless
lab (etcd, the watcher); their Puppet runs then get their catalogs from the
server, whose environment `production` holds the project's module and the
manifests in MANIFESTS (tests add theirs there). The CA signs the lab's
agents only (an autosign whitelist).

The JVMs take about two minutes to start on this shared 2-core machine, so
converge starts them first, converges the nodes while they start, and
records how long each phase took in state.json (`phases`).
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

from ..base import MANIFESTS as NODE_MANIFESTS
from ..base import REPO, LabError
from . import LocalLab

SERVER = "puppet"
CODE = "/etc/puppet/code/environments/production"
MANIFESTS = f"{CODE}/manifests"   # every .pp here is in every agent's catalog
AGENT_RUN_CMD = "puppet agent --test --waitforlock 1 --maxwaitforlock 600"
PUPPETDB_URL = f"https://{SERVER}:8081"
PG_DATA = "/var/lib/postgresql/trigger-lab"
SERVER_SCRIPT = Path(__file__).resolve().parent / "server.sh"
PACKAGES = {  # a file each package installs: package
    "/usr/share/puppetserver/puppetserver.jar": "puppetserver",
    "/usr/share/puppetdb/puppetdb.jar": "puppetdb",
    "/usr/lib/ruby/vendor_ruby/puppet/functions/puppetdb_query.rb": "puppet-terminus-puppetdb",
    "/usr/lib/postgresql/15/bin/postgres": "postgresql-15",
    "/usr/bin/java": "default-jre-headless",
}
# Heap sizes: Debian's 1 GiB for Puppet Server is more than one JRuby needs
# here; PuppetDB's default is 192 MiB. The client compiler only
# (TieredStopAtLevel=1) and the serial collector: start-up is what a test lab
# pays for, on two cores shared with other work, not peak throughput.
JVM_OPTIONS = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
SERVICES = {
    "postgres": {"user": "postgres", "argv": [
        "/usr/lib/postgresql/15/bin/postgres", "-D", PG_DATA, "-k", "/run/postgresql",
        "-c", "listen_addresses=127.0.0.1"]},
    "puppetserver": {"user": "puppet", "argv": [
        "/usr/bin/java", "-Xmx768m", *JVM_OPTIONS, "-Djruby.lib=/usr/share/jruby/lib", "-XX:+CrashOnOutOfMemoryError",
        "-jar", "/usr/share/puppetserver/puppetserver.jar",
        "--config", "/etc/puppet/puppetserver/conf.d", "--bootstrap-config", "/etc/puppet/puppetserver/services.d",
        "--restart-file", "/run/puppetserver/restart"]},
    "puppetdb": {"user": "puppetdb", "argv": [
        "/usr/bin/java", "-Xmx256m", *JVM_OPTIONS, "-Djava.security.egd=/dev/urandom",
        "-cp", "/usr/share/puppetdb/puppetdb.jar", "clojure.main", "-m", "puppetlabs.puppetdb.core",
        "services", "--config", "/etc/puppetdb/conf.d", "--bootstrap-config", "/etc/puppetdb/bootstrap.cfg",
        "--restart-file", "/run/puppetdb/restart"]},
}
AGENT_DAEMON = {"argv": ["/usr/bin/puppet", "agent", "--no-daemonize", "--logdest", "console",
                         "--runinterval", "2h"], "restart": "on-failure", "restart_sec": 2}
LAST_RUN = "/var/cache/puppet/public/last_run_summary.yaml"  # `puppet config print lastrunfile`
# measured: 2 min each alone at load 5-8; 8.5 min for PuppetDB and over 10
# for Puppet Server, started together at load 20-28
JVM_START_TIMEOUT = 1500


def missing_packages() -> list[str]:
    """The Debian packages of the master lab that are not installed."""
    return [package for path, package in PACKAGES.items() if not Path(path).exists()]


class MasterLab(LocalLab):
    backend = "local"
    time_scale = 2.0  # a run asks the server for its catalog: seconds more under load

    def __init__(self, name: str = "master", **options):
        super().__init__(name=name, **options)
        self.server = SERVER
        self.puppetdb_url = PUPPETDB_URL

    @property
    def machines(self) -> tuple[str, ...]:
        return (*self.nodes, SERVER)

    def pytest_options(self) -> list[str]:
        return [f"--lab-name={self.name}", "--lab-master"]

    def create(self) -> None:
        missing = missing_packages()
        if missing:
            raise LabError(f"the master lab needs the Debian packages {', '.join(missing)}: "
                           "run scripts/setup.sh --master")
        super().create()

    def converge(self, run_cmd: str | None = None) -> None:
        """Server first (its JVMs start while the nodes converge), then the agents."""
        self._require_up()
        phases = {}
        began = time.monotonic()
        self.run(SERVER, ["sh", str(SERVER_SCRIPT), ",".join(self.nodes), str(REPO / "puppet" / "trigger")],
                 timeout=300, check=True)
        self._write_hiera()
        phases["server: CA, configuration, initdb"] = time.monotonic() - began
        self._set_service(SERVER, "postgres", {"state": "running", "restart": "on-failure", **SERVICES["postgres"]})
        started = time.monotonic()
        self._make_database()
        for name in ("puppetserver", "puppetdb"):
            self._set_service(SERVER, name, {"state": "running", "restart": "on-failure", **SERVICES[name]})
        mark = time.monotonic()
        super().converge(run_cmd=run_cmd or AGENT_RUN_CMD)
        phases["nodes: node.pp (etcd, watchers), while the JVMs start"] = time.monotonic() - mark
        for name in ("puppetdb", "puppetserver"):  # PuppetDB is usually first: each its own time
            self._wait_jvm(name, started)
            phases[f"{name} up (from its start)"] = time.monotonic() - started
        mark = time.monotonic()
        self._start_agents()
        phases["agents: certificates signed, first run of each daemon"] = time.monotonic() - mark
        phases["converge in all"] = time.monotonic() - began
        self._record(phase="converged", phases={k: round(v, 1) for k, v in phases.items()})

    def put(self, node: str, path: str, text: str) -> None:
        """A manifest a test gives a node's masterless run (lab.base.MANIFESTS)
        goes into that node's catalog on the server instead, so the same tests
        run on both labs."""
        server_path = self._server_manifest(node, path)
        if server_path:
            body = "".join(f"  {line}\n" if line else "\n" for line in text.splitlines())
            text = (f"# {path} of {node} (lab/local/master.py)\n"
                    f"if $trusted['certname'] == '{node}' {{\n{body}}}\n")
            node, path = SERVER, server_path
        super().put(node, path, text)

    def remove(self, node: str, path: str) -> None:
        server_path = self._server_manifest(node, path)
        super().remove(*((SERVER, server_path) if server_path else (node, path)))

    def _server_manifest(self, node: str, path: str) -> str | None:
        """Where the server keeps what `put` gives a node as its manifest `path`."""
        if node in self.nodes and path.startswith(NODE_MANIFESTS + "/") and path.endswith(".pp"):
            return f"{MANIFESTS}/{node}--{path[len(NODE_MANIFESTS) + 1:].replace('/', '-')}"
        return None

    def phases(self) -> dict[str, float]:
        """How long each phase of the last converge took, in seconds."""
        return self._state().get("phases", {})

    # -- the server ------------------------------------------------------------

    def _write_hiera(self) -> None:
        # Fires from catalogs compiled on the server reach etcd from the agent
        # that applies them: every member, so one that is down is not fatal.
        urls = "".join(f"  - 'http://{self.address(n)}:2379'\n" for n in self.etcd_members)
        self.put(SERVER, f"{CODE}/data/common.yaml", f"---\ntrigger::globals::endpoints:\n{urls}")

    def _make_database(self, timeout: float = 60) -> None:
        psql = ["psql", "-h", "/run/postgresql", "-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1"]
        deadline = time.monotonic() + timeout
        while self.run(SERVER, [*psql, "-c", "select 1"]).returncode != 0:
            if time.monotonic() > deadline:
                raise LabError(f"{SERVER}: PostgreSQL did not answer within {timeout:.0f}s; "
                               f"see {self.node_dir(SERVER) / 'log/postgres.log'}")
            time.sleep(0.2)
        self.run(SERVER, [*psql, "-c", "create role puppetdb login"], check=True)
        self.run(SERVER, [*psql, "-c", "create database puppetdb owner puppetdb"], check=True)
        self.run(SERVER, [*psql, "-d", "puppetdb", "-c", "create extension pg_trgm"], check=True)

    def _wait_jvm(self, name: str, since: float) -> None:
        """Until the service's trapperkeeper says it is up (its restart file holds 1)."""
        while time.monotonic() - since < JVM_START_TIMEOUT:
            done = self.run(SERVER, ["cat", f"/run/{name}/restart"])
            if done.stdout.startswith("1"):
                return
            status = self.service_status(SERVER, name)
            if status.get("state") in ("failed", "stopped") or status.get("restarts", 0) >= 2:
                break
            time.sleep(1)
        log = self.node_dir(SERVER) / "log" / f"{name}.log"
        text = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise LabError(f"{SERVER}: {name} is not up after {time.monotonic() - since:.0f}s; {log} ends:\n{text}")

    # -- the agents ------------------------------------------------------------

    def _start_agents(self) -> None:
        # a CSR, signed at once by the whitelist, and the CA's certificate;
        # all at once (each is a Ruby start-up and an RSA key)
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: self.run(node, ["puppet", "ssl", "bootstrap", "--waitforcert", "0"],
                                                timeout=300, check=True), self.nodes))
        for node in self.nodes:
            self._set_service(node, "puppet-agent", dict(AGENT_DAEMON, state="running"))
        for node in self.nodes:
            self.wait_agent_run(node, after=0)

    def wait_agent_run(self, node: str, after: float, timeout: float = 300) -> dict:
        """Until the node's agent has finished a run that ended after `after`
        (epoch seconds); its last_run_summary's times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.run(node, ["sh", "-c", f"stat -c %Y {LAST_RUN} 2>/dev/null"])
            if done.stdout.strip() and float(done.stdout) >= after:
                return {"ended": float(done.stdout)}
            time.sleep(1)
        log = self.node_dir(node) / "log" / "puppet-agent.log"
        text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise LabError(f"{node}: no Puppet agent run ended within {timeout:.0f}s; {log} ends:\n{text}")
