"""Small Puppet-shape catalogs written inline, for tests of one rule each."""

from __future__ import annotations


def resource(type_: str, title: str, line: int = 1, **parameters) -> dict:
    return {"type": type_, "title": title, "file": "site.pp", "line": line, "exported": False,
            "parameters": parameters}


def trigger(title: str, hosts: list[str], **parameters) -> dict:
    return resource("Trigger", title, hosts=hosts, ttl=parameters.pop("ttl", 5), **parameters)


def catalog(node: str, *resources: dict, contains: list[tuple[str, str]] = ()) -> dict:
    """Puppet's catalog JSON (catalog_format 2): edges are containment only."""
    return {"name": node, "catalog_format": 2, "version": 1, "resources": list(resources),
            "edges": [{"source": s, "target": t} for s, t in contains]}


def poke(node: str, name: str, hosts: list[str], **parameters) -> dict:
    """A node whose config file notifies one trigger."""
    return catalog(node, trigger(name, hosts, **parameters),
                   resource("File", f"/etc/{name}", notify=f"Trigger[{name}]"))
