"""Issue 24 on the master lab (`--lab-master`): what only a Puppet server
and PuppetDB show. Targets from PuppetDB (`trigger fire --query`, the
module's `trigger::query_nodes`), the seed's load balancers collecting
exported resources, a triggered run meeting the agent daemon's scheduled
run at Puppet's lock, and a catalog that fails to compile on the server.

    pytest tests/integration/lab/test_master.py --lab-master
    scripts/test.sh --master
"""

from __future__ import annotations

import json
import shlex

import pytest

from lab.base import MANIFESTS
from tests.integration.lab import checks

pytestmark = [pytest.mark.master, pytest.mark.root, pytest.mark.etcd, pytest.mark.tsp,
              pytest.mark.puppet, pytest.mark.slow]

PUPPETDB = "https://puppet:8081"
AGENT_TEST = ["puppet", "agent", "--test", "--waitforlock", "1", "--maxwaitforlock", "600"]
LOCK = "/var/cache/puppet/state/agent_catalog_run.lock"  # `puppet config print agent_catalog_run_lockfile`
PROFILES = "/etc/puppet/code/environments/production/manifests/10-profiles.pp"


def trigger(lab, host, node: str, *args: str):
    argv = ["trigger", *args, "--endpoints", ",".join(lab.endpoints(node))]
    return host.run(shlex.join(argv))


def agent_run(lab, node: str) -> None:
    """A `puppet agent --test` on the node; 0 or 2 (changes) is success."""
    done = lab.run(node, AGENT_TEST, timeout=300 * lab.time_scale)
    assert done.returncode in (0, 2), f"{node}: puppet agent --test exited {done.returncode}:\n" \
                                      f"{done.stdout[-2000:]}{done.stderr[-2000:]}"


def pdb(lab, node: str, expression: str):
    """`expression` over a trigger.puppetdb.PuppetDB of the lab, evaluated on the node (JSON back)."""
    code = ("import json; from trigger.puppetdb import PuppetDB; "
            f"db = PuppetDB({PUPPETDB!r}); print(json.dumps({expression}))")
    done = lab.run(node, ["/usr/local/lib/trigger/bin/python", "-c", code], check=True)
    return json.loads(done.stdout)


def stored_keys(lab, host) -> int:
    return len(host.check_output(checks.etcdctl(lab.endpoints("node1"),
                                                "get --prefix --keys-only /puppet_trigger")).split())


@pytest.fixture(scope="module")
def profiles(lab):
    """node2 and node3 are the load balancers (class profile::loadbalancer),
    collecting what the web nodes export; PuppetDB knows it after their runs."""
    lab.put(lab.server, PROFILES, """\
class profile::loadbalancer {
  file { '/var/lib/trigger-lab/pool': ensure => directory }
  File <<| tag == 'trigger_lab_pool' |>>
}
""")
    for node in ("node2", "node3"):
        lab.put(node, f"{MANIFESTS}/10-lb.pp", "include profile::loadbalancer\n")
        agent_run(lab, node)
    yield ["node2", "node3"]
    for node in ("node2", "node3"):
        lab.remove(node, f"{MANIFESTS}/10-lb.pp")
    lab.remove(lab.server, PROFILES)


def test_puppetdb_client_answers_from_the_labs_puppetdb(lab, profiles):
    assert pdb(lab, "node1", "db.nodes('Class[Settings]')") == list(lab.nodes)
    assert pdb(lab, "node1", "db.nodes('class[profile::loadbalancer]')") == profiles
    assert pdb(lab, "node1", """db.nodes('inventory[certname] { facts.networking.hostname = "node2" }')""") \
        == ["node2"]
    catalogs = pdb(lab, "node1", "db.catalogs()")
    assert sorted(c["certname"] for c in catalogs) == list(lab.nodes)
    lb = next(c for c in catalogs if c["certname"] == "node2")
    refs = {(r["type"], r["title"]) for r in lb["resources"]["data"]}
    assert ("Class", "Profile::Loadbalancer") in refs and ("Exec", "trigger lab: record this run") in refs
    assert lb["edges"]["data"], "the query API's catalog has its typed edges"
    changed = pdb(lab, "node1", "db.changed_resources()")
    for node in lab.nodes:  # every applied catalog's report has the record exec changed
        assert 1 <= changed[node]["changed"]["Exec[trigger lab: record this run]"] <= changed[node]["runs"]


def test_plan_reads_every_catalog_and_report_from_the_labs_puppetdb(lab, profiles):
    """`trigger-sim plan --puppetdb`, as installed on a node, against the real PuppetDB: every
    active node's catalog, and each resource's rate of change from the stored reports."""
    argv = ["/usr/local/lib/trigger/bin/trigger-sim", "plan", "--puppetdb", PUPPETDB, "-o", "json",
            "--changes", "reports", "--out", "/tmp/plan"]
    done = lab.run("node1", argv)
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)
    assert sorted(n["name"] for n in document["nodes"]) == list(lab.nodes)
    assert document["errors"] == []
    scenario = lab.run("node1", ["cat", "/tmp/plan/plan.yaml"], check=True).stdout
    assert "reports" in scenario  # the header names the assumption used


def test_fire_query_resolves_the_hosts_in_puppetdb_first(lab, hosts, settled, profiles):
    node3 = hosts["node3"]
    before = checks.now(node3)
    out = trigger(lab, node3, "node3", "fire", "lab query", "--query", "Class[Profile::Loadbalancer]",
                  "--puppetdb", PUPPETDB)
    assert out.rc == 0, out.stderr
    assert "--query matched 2 host(s): node2, node3" in out.stderr
    checks.assert_followed_by_runs(hosts, profiles, before, timeout=120)


@pytest.mark.parametrize("args, says", [
    (["--query", 'inventory[certname] { facts.networking.hostname = "nowhere" }', "--puppetdb", PUPPETDB],
     "matches no active node"),
    (["--query", "nodes[certname] { certname ~ }", "--puppetdb", PUPPETDB], "rejected the query"),
    (["--query", "Class[Settings]", "--puppetdb", "https://puppet:8082"], "does not answer"),
    (["--query", "Class[Settings]", "--puppetdb", PUPPETDB, "--puppetdb-cacert", "/root/other/cert.pem",
      "--puppetdb-cert", "/root/other/cert.pem", "--puppetdb-key", "/root/other/key.pem"], "TLS failed"),
])
def test_a_query_puppetdb_cannot_answer_is_one_line_and_exit_2_before_any_write(lab, hosts, settled, args, says):
    node1 = hosts["node1"]
    node1.run("mkdir -p /root/other && cd /root/other && test -f key.pem || openssl req -x509 -newkey "
              "rsa:2048 -nodes -keyout key.pem -out cert.pem -subj /CN=stranger -days 1 2>/dev/null")
    keys = stored_keys(lab, node1)
    out = trigger(lab, node1, "node1", "fire", "lab bad query", *args)
    assert out.rc == 2, out.stdout + out.stderr
    assert says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert stored_keys(lab, node1) == keys, "nothing is written for a query that failed"


def web_manifest(port: int) -> str:
    """The seed's example on a web node: its balancer member (here a file it
    exports for the load balancers) notifies the trigger whose hosts come
    from PuppetDB, `query_nodes` renamed `trigger::query_nodes`."""
    return f"""\
trigger {{'refresh load balancers':
  hosts    => trigger::query_nodes('Class[Profile::Loadbalancer]', fqdn),
  provider => 'etcd',
}}
file {{ '/var/lib/trigger-lab/balancermember':
  content => "${{trusted['certname']}} port {port}\\n",
  notify  => Trigger['refresh load balancers'],
}}
@@file {{ "/var/lib/trigger-lab/pool/${{trusted['certname']}}":
  content => "${{trusted['certname']}} port {port}\\n",
  tag     => 'trigger_lab_pool',
}}
"""


def test_exported_members_reach_the_load_balancers_through_the_trigger(lab, hosts, settled, profiles):
    try:
        for port in (8080, 8081):
            lab.put("node1", f"{MANIFESTS}/20-web.pp", web_manifest(port))
            before = checks.now(hosts["node2"])
            agent_run(lab, "node1")  # its member changes: exported, and the trigger fires
            runs = checks.assert_followed_by_runs(hosts, profiles, before, timeout=180)
            for node in profiles:
                assert runs[node].run_id != "-", "a triggered run, not the daemon's"
                member = hosts[node].file("/var/lib/trigger-lab/pool/node1")
                assert member.content_string == f"node1 port {port}\n"
    finally:
        lab.remove("node1", f"{MANIFESTS}/20-web.pp")


def test_query_nodes_with_bad_pql_fails_the_compilation_naming_the_query(lab, hosts):
    lab.put("node1", f"{MANIFESTS}/30-bad-query.pp",
            "notify { 'lbs': message => trigger::query_nodes('nodes[certname] { certname ~ }') }\n")
    try:
        done = lab.run("node1", AGENT_TEST, timeout=300)
        assert done.returncode == 1
        assert "trigger::query_nodes('nodes[certname] { certname ~ }')" in done.stdout + done.stderr
    finally:
        lab.remove("node1", f"{MANIFESTS}/30-bad-query.pp")


def test_a_triggered_run_waits_for_the_scheduled_runs_lock_and_then_runs(lab, hosts, settled):
    node1 = hosts["node1"]
    slow = f"{MANIFESTS}/40-slow.pp"
    lab.put("node1", slow, "exec { 'trigger lab: a slow run': command => '/bin/sleep 20' }\n")
    try:
        before = checks.now(node1)
        lab.run("node1", ["pkill", "-USR1", "-f", "puppet agent --no-daemonize"], check=True)
        checks.wait_until(lambda: node1.file(LOCK).exists, 60, "the daemon's scheduled run never took the lock")
        scheduled = checks.wait_until(lambda: [r for r in checks.runs_since(node1, before) if r.run_id == "-"],
                                      60, "the daemon's scheduled run left no line")[0]
        fired = checks.fire(node1, "lab lock", ["node1"], lab.endpoints("node1"))
        assert node1.file(LOCK).exists, "the scheduled run was still going when the fire came"
        run = checks.assert_followed_by_runs(hosts, ["node1"], fired, timeout=240)["node1"]
        # it waited: it ran its catalog after the 20 s of the scheduled run
        assert run.start > scheduled.start + 20
    finally:
        lab.remove("node1", slow)


def test_a_catalog_that_fails_to_compile_is_reported_failed_with_its_output(lab, hosts, settled):
    failing = f"{MANIFESTS}/60-fail.pp"
    lab.put("node2", failing, "fail('trigger lab: this catalog fails on purpose')\n")
    try:
        out = trigger(lab, hosts["node3"], "node3", "fire", "lab compile", "--hosts", "node2", "--wait",
                      "--timeout", str(int(240 * lab.time_scale)))
        assert out.rc == 4, out.stdout + out.stderr
        rows = {line.split("\t")[0]: line for line in out.stdout.splitlines() if "\t" in line}
        assert "failed" in rows["node2"]
        # the run's output (task-spooler's) has the server's compile error
        output = lab.run("node2", ["sh", "-c", "grep -h 'fails on purpose' /tmp/ts-out.* 2>/dev/null"]).stdout
        assert "Could not retrieve catalog from remote server" in output, output
    finally:
        lab.remove("node2", failing)
