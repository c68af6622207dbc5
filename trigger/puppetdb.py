"""A small PuppetDB client: which nodes a query names, and their catalogs.

Sites with a Puppet server keep their nodes' classes, facts, catalogs and
reports in PuppetDB; `trigger fire --query` targets nodes from there the way
Bolt's `--query` and the seed's `query_nodes('Class[...]')` do, and
`trigger-sim plan` reads the catalogs.

A query is PQL (`nodes[certname] { facts.os.family = "Debian" }`,
`inventory[certname] { ... }`; it must project `certname`) or the seed's
short form `Class[Profile::Loadbalancer]` (any `Type[title]`: the nodes
whose catalog has that resource). PuppetDB answers for active nodes only.

TLS: an https URL is reached with Puppet's own files, by default the
agent's (`puppet config print localcacert hostcert hostprivkey`), so on a
node `--puppetdb https://puppet:8081` is all it takes; PuppetDB lets in any
certificate its CA signed unless its allow-list says otherwise.

Standard library only. Every failure is a `PuppetDBError` whose message is
one line naming the URL and what went wrong.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

DEFAULT_TIMEOUT = 30.0
QUERY_PATH = "/pdb/query/v4"
# Type[title] as Puppet writes a resource reference: Class[Profile::Loadbalancer]
REFERENCE = re.compile(r"([A-Za-z][\w]*(?:::[A-Za-z]\w*)*)\[(.+)\]", re.DOTALL)


class PuppetDBError(Exception):
    """PuppetDB could not answer the question; the message says why, in one line."""


@dataclass(frozen=True)
class TLSFiles:
    cacert: str
    cert: str
    key: str


def capitalize_reference(name: str) -> str:
    """Puppet stores types and class titles capitalized segment by segment."""
    return "::".join(part[:1].upper() + part[1:] for part in name.split("::"))


def pql(query: str) -> str:
    """The PQL of a query: `Type[title]` becomes the nodes with that resource,
    anything else is PQL already."""
    query = query.strip()
    if not query:
        raise PuppetDBError("the query is empty: give PQL or Type[title], e.g. 'Class[Profile::Loadbalancer]'")
    match = REFERENCE.fullmatch(query)
    if not match:
        return query
    kind, title = capitalize_reference(match.group(1)), match.group(2).strip().strip("'\"")
    if kind == "Class":
        title = capitalize_reference(title)
    return f"resources[certname] {{ type = {json.dumps(kind)} and title = {json.dumps(title)} }}"


def certnames(rows) -> list[str]:
    """The sorted distinct certnames of a PQL answer (rows of objects)."""
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise PuppetDBError("PuppetDB's answer is not a list of rows")
    if rows and not all(isinstance(row.get("certname"), str) for row in rows):
        raise PuppetDBError("the query's rows have no certname: project it, e.g. nodes[certname] { ... }")
    return sorted({row["certname"] for row in rows})


def agent_tls_files(puppet: str = "puppet") -> TLSFiles:
    """The agent's CA certificate, certificate and key, from its puppet.conf."""
    argv = [puppet, "config", "print", "localcacert", "hostcert", "hostprivkey", "--section", "agent"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PuppetDBError(f"cannot ask Puppet for its TLS files ({' '.join(argv)}): {exc}") from None
    settings = dict(line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line)
    try:
        return TLSFiles(settings["localcacert"], settings["hostcert"], settings["hostprivkey"])
    except KeyError:
        raise PuppetDBError(f"{' '.join(argv)} did not print the TLS files: "
                            f"{(done.stderr or done.stdout).strip()[:200]}") from None


class PuppetDB:
    """PuppetDB's query API at `url` (http://... or https://..., no path)."""

    def __init__(self, url: str, tls: TLSFiles | None = None, timeout: float = DEFAULT_TIMEOUT):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PuppetDBError(f"PuppetDB URL {url!r}: give http(s)://HOST:PORT, e.g. https://puppet:8081")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.timeout = timeout
        self._context = None
        if parts.scheme == "https":
            tls = tls or agent_tls_files()
            try:
                self._context = ssl.create_default_context(cafile=tls.cacert)
                self._context.load_cert_chain(tls.cert, tls.key)
            except (OSError, ssl.SSLError) as exc:
                raise PuppetDBError(f"cannot load the TLS files for {self.url} "
                                    f"({tls.cacert}, {tls.cert}, {tls.key}): {exc}") from None

    # -- questions -----------------------------------------------------------------

    def nodes(self, query: str) -> list[str]:
        """The certnames of the active nodes a query (PQL or Type[title]) names."""
        return certnames(self.query(pql(query)))

    def catalogs(self) -> list[dict]:
        """Every active node's catalog as /pdb/query/v4/catalogs/<node> gives it
        (resources and edges expanded under "data")."""
        names = certnames(self.query("nodes[certname] {}"))
        return [self.get(f"{QUERY_PATH}/catalogs/{urllib.parse.quote(name, safe='')}") for name in names]

    def changed_resources(self, reports_since: str | None = None) -> dict[str, dict]:
        """Per node, from its stored reports (PuppetDB keeps 14 days by default):
        {"runs": reports, "changed": {"Type[title]": runs in which it changed}}.

        A resource "changed" in a run when the run's report has a `success`
        event for it (Puppet records no event for a resource in sync).
        `reports_since`: an ISO time, only reports that ended after it."""
        since = f' and receive_time > {json.dumps(reports_since)}' if reports_since else ""
        reports = self.query(f"reports[certname, hash] {{ noop = false{since} }}")
        result: dict[str, dict] = {}
        for row in reports:
            result.setdefault(row["certname"], {"runs": 0, "changed": {}})["runs"] += 1
        events = self.query("events[certname, report, resource_type, resource_title] "
                            f"{{ status = \"success\"{since.replace('receive_time', 'report_receive_time')} }}")
        kept = {row["hash"] for row in reports}
        for row in events:
            if row["report"] in kept:
                changed = result[row["certname"]]["changed"]
                ref = f"{row['resource_type']}[{row['resource_title']}]"
                changed[ref] = changed.get(ref, 0) + 1
        return result

    # -- the wire ------------------------------------------------------------------

    def query(self, pql_text: str):
        """The rows of one PQL query."""
        body = json.dumps({"query": pql_text}).encode()
        return self._request(QUERY_PATH, body, what=f"query {pql_text!r}")

    def get(self, path: str):
        return self._request(path, None, what=path)

    def _request(self, path: str, body: bytes | None, what: str):
        request = urllib.request.Request(self.url + path, data=body, method="POST" if body else "GET",
                                         headers={"Content-Type": "application/json",
                                                  "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._context) as answer:
                text = answer.read()
        except urllib.error.HTTPError as exc:
            detail = _first_line(exc.read().decode(errors="replace"))
            if exc.code == 400:
                raise PuppetDBError(f"PuppetDB at {self.url} rejected the {what}: {detail}") from None
            if exc.code in (401, 403):
                raise PuppetDBError(f"PuppetDB at {self.url} refused this client's certificate "
                                    f"(HTTP {exc.code}): {detail}") from None
            raise PuppetDBError(f"PuppetDB at {self.url} answered HTTP {exc.code} to the {what}: {detail}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLError):
                raise PuppetDBError(f"PuppetDB at {self.url}: TLS failed "
                                    f"(certificate refused or not trusted): {_first_line(str(reason))}") from None
            raise PuppetDBError(f"PuppetDB at {self.url} does not answer: {_first_line(str(reason))}") from None
        except ssl.SSLError as exc:  # a handshake refused after the connection was made
            raise PuppetDBError(f"PuppetDB at {self.url}: TLS failed "
                                f"(certificate refused or not trusted): {_first_line(str(exc))}") from None
        except (OSError, TimeoutError) as exc:
            raise PuppetDBError(f"PuppetDB at {self.url} does not answer: {_first_line(str(exc))}") from None
        try:
            return json.loads(text)
        except ValueError:
            raise PuppetDBError(f"PuppetDB at {self.url} answered the {what} with something "
                                f"that is not JSON: {_first_line(text.decode(errors='replace'))}") from None


def query_hosts(query: str, url: str | None, tls_files: list[str | None] = (None, None, None)) -> list[str]:
    """The hosts a `--query` names (`trigger fire`): at least one, or PuppetDBError.

    `tls_files`: CA certificate, certificate and key, all or none (none: the agent's)."""
    if not url:
        raise PuppetDBError("--query needs --puppetdb URL, e.g. https://puppet:8081")
    given = [f for f in tls_files if f]
    if given and len(given) != 3:
        raise PuppetDBError("give all of --puppetdb-cacert, --puppetdb-cert and --puppetdb-key, or none "
                            "(the agent's own)")
    hosts = PuppetDB(url, TLSFiles(*given) if given else None).nodes(query)
    if not hosts:
        raise PuppetDBError(f"--query {query!r} matches no active node in PuppetDB at {url}: nothing fired")
    return hosts


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else "(no detail)")[:300]
