"""Puppet's catalog JSON -> PuppetDB's two shapes, following PuppetDB's documented formats.

`to_wire` does what the PuppetDB terminus does before it sends a catalog
(catalog wire format v9): containment edges become typed `contains`
edges, and each relationship metaparameter becomes an edge of its own:
`notify` -> `notifies` and `before` -> `before` from the resource,
`subscribe` -> `subscription-of` and `require` -> `required-by` towards it
(so the source of a refresh edge is always the resource whose change
refreshes the target). `to_query` gives what `/pdb/query/v4/catalogs/<node>`
returns for it: resources and edges under `{"data": [...], "href": ...}`,
edges flattened to `source_type`/`source_title`/... fields.

Used to make the importer's fixtures and the benchmark's fleets, and to
feed compiled catalogs to a PuppetDB (`replace catalog` command).
"""

from __future__ import annotations

import hashlib
import json

from .catalog import parse_ref

# metaparameter -> (relationship, the resource is the edge's source)
RELATIONSHIPS = {"before": ("before", True), "require": ("required-by", False),
                 "notify": ("notifies", True), "subscribe": ("subscription-of", False)}


def _end(reference: str) -> dict:
    canonical = parse_ref(reference) or reference
    type_, title = canonical.split("[", 1)
    return {"type": type_, "title": title[:-1]}


def to_wire(catalog: dict, producer: str = "puppet.example.com",
            timestamp: str = "2026-12-01T00:00:00.000Z") -> dict:
    """A Puppet catalog (catalog_format 2) as PuppetDB's catalog wire format v9."""
    resources = []
    edges = []
    for raw in catalog["resources"]:
        resource = {"type": raw["type"], "title": raw["title"], "exported": raw.get("exported", False),
                    "tags": sorted(set(raw.get("tags", []))), "parameters": dict(raw.get("parameters", {}))}
        if "file" in raw:
            resource["file"], resource["line"] = raw["file"], raw.get("line")
        resources.append(resource)
        this = {"type": raw["type"], "title": raw["title"]}
        for param, (relationship, forward) in RELATIONSHIPS.items():
            value = raw.get("parameters", {}).get(param)
            for other in value if isinstance(value, list) else [value] if value else []:
                ends = (this, _end(other)) if forward else (_end(other), this)
                edges.append({"source": ends[0], "target": ends[1], "relationship": relationship})
    for edge in catalog.get("edges", []):
        edges.append({"source": _end(edge["source"]), "target": _end(edge["target"]),
                      "relationship": "contains"})
    unique = list({json.dumps(e, sort_keys=True): e for e in edges}.values())  # as the terminus: uniq!
    return {
        "certname": catalog["name"], "version": str(catalog.get("version", "")),
        "environment": catalog.get("environment", "production"),
        "transaction_uuid": catalog.get("transaction_uuid") or "00000000-0000-0000-0000-000000000000",
        "catalog_uuid": catalog.get("catalog_uuid") or "00000000-0000-0000-0000-000000000000",
        "code_id": catalog.get("code_id"), "job_id": None,
        "producer_timestamp": timestamp, "producer": producer,
        "resources": resources, "edges": unique,
    }


def to_query(wire: dict) -> dict:
    """A wire-format catalog as `/pdb/query/v4/catalogs/<node>` returns it."""
    node = wire["certname"]
    href = f"/pdb/query/v4/catalogs/{node}"
    resources = [{"certname": node, **r, "resource": hashlib.sha1(
        f"{r['type']}[{r['title']}]".encode()).hexdigest()} for r in wire["resources"]]
    edges = [{"certname": node, "relationship": e["relationship"],
              "source_type": e["source"]["type"], "source_title": e["source"]["title"],
              "target_type": e["target"]["type"], "target_title": e["target"]["title"]}
             for e in wire["edges"]]
    body = {k: v for k, v in wire.items() if k not in ("resources", "edges")}
    body["hash"] = hashlib.sha1(json.dumps(wire["resources"], sort_keys=True).encode()).hexdigest()
    return {**body, "resources": {"href": href + "/resources", "data": resources},
            "edges": {"href": href + "/edges", "data": edges}}
