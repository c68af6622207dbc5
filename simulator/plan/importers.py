"""Catalog documents of three shapes -> `Catalog`s, detected per document.

| shape | what makes it | refresh relationships |
|---|---|---|
| `puppet` | `puppet catalog compile --render-as json` (catalog_format 2): `name`, `resources` list, `edges` of strings | only as metaparameters: `notify`/`~>` on the source, `subscribe` on the target; `edges` are containment |
| `wire` | PuppetDB's catalog wire format (v9, what the PuppetDB terminus sends), optionally inside a `replace catalog` command | typed edges `{source: {type, title}, target, relationship}`: `notifies`, `subscription-of` (source refreshes target in both), `contains` |
| `query` | PuppetDB's `/pdb/query/v4/catalogs/<node>`: `certname`, `resources: {data}`, `edges: {data}` | typed edges `{relationship, source_type, source_title, target_type, target_title}` |

The wire and query shapes may still carry the metaparameters too; both
are read and the relationships merged, so nothing is counted twice.
`before`/`required-by` order resources but refresh nothing: ignored.

No IO here but `load_catalog_dir`, which reads files and hands the parsed
documents to `load_catalogs`, the entry point for any other source
(a PuppetDB reader yields `(source name, parsed JSON)` pairs).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import Catalog, CatalogError, Resource, parse_ref, ref, type_name

REFRESH_RELATIONSHIPS = ("notifies", "subscription-of")  # both: source's change refreshes target


@dataclass
class Fleet:
    """The catalogs read, in order, and one line per document that could not be read."""

    catalogs: list[Catalog] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def detect_shape(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return None
    if doc.get("command") == "replace catalog" and isinstance(doc.get("payload"), dict):
        return detect_shape(doc["payload"])
    resources = doc.get("resources")
    if isinstance(resources, dict) and isinstance(resources.get("data"), list) and "certname" in doc:
        return "query"
    if isinstance(resources, list) and "certname" in doc:
        return "wire"
    if isinstance(resources, list) and "name" in doc:
        return "puppet"
    return None


def _metaparam_refreshes(resource: Resource) -> list[tuple[str, str]]:
    out = []
    for param, forward in (("notify", True), ("subscribe", False)):
        value = resource.parameters.get(param)
        for item in value if isinstance(value, list) else [value] if value is not None else []:
            other = parse_ref(item) if isinstance(item, str) else None
            if other is None:
                raise CatalogError(f"{resource.ref}: {param} names {item!r}, not a resource reference")
            out.append((resource.ref, other) if forward else (other, resource.ref))
    return out


def _resource(raw: Any) -> Resource:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or "title" not in raw:
        raise CatalogError(f"a resource without type and title: {str(raw)[:60]}")
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise CatalogError(f"{raw['type']}[{raw['title']}]: parameters is not a mapping")
    line = raw.get("line")
    return Resource(
        type=type_name(raw["type"]), title=str(raw["title"]), file=raw.get("file"),
        line=line if isinstance(line, int) else None, parameters=params,
        exported=bool(raw.get("exported", False)),
    )


def _edge_refs(edge: Any, shape: str) -> tuple[str, str, str]:
    """(source ref, target ref, relationship) of one edge of any shape."""
    if not isinstance(edge, dict):
        raise CatalogError(f"an edge that is not a mapping: {str(edge)[:60]}")
    if shape == "query":
        try:
            return (ref(edge["source_type"], str(edge["source_title"])),
                    ref(edge["target_type"], str(edge["target_title"])), edge["relationship"])
        except KeyError as exc:
            raise CatalogError(f"an edge without {exc.args[0]}") from None
    relationship = edge.get("relationship", "contains")  # Puppet's own edges: containment
    ends = []
    for end in ("source", "target"):
        value = edge.get(end)
        if isinstance(value, dict) and "type" in value and "title" in value:
            ends.append(ref(value["type"], str(value["title"])))
        elif isinstance(value, str) and parse_ref(value):
            ends.append(parse_ref(value))
        else:
            raise CatalogError(f"an edge whose {end} is not a resource: {str(value)[:60]}")
    return ends[0], ends[1], relationship


def parse_catalog(doc: Any, source: str) -> Catalog:
    """One parsed document -> a `Catalog`, or `CatalogError` naming `source`."""
    shape = detect_shape(doc)
    if shape is None:
        raise CatalogError(f"{source}: not a catalog of a known shape (Puppet catalog JSON, "
                           f"PuppetDB wire format or PuppetDB query API)")
    if doc.get("command") == "replace catalog":
        doc = doc["payload"]
    node = doc["certname"] if shape != "puppet" else doc["name"]
    if not isinstance(node, str) or not node:
        raise CatalogError(f"{source}: the catalog names no node")
    resources = doc["resources"]["data"] if shape == "query" else doc["resources"]
    edges = doc.get("edges") or ([] if shape != "query" else {"data": []})
    if shape == "query":
        edges = edges.get("data") if isinstance(edges, dict) else None
    if not isinstance(edges, list):
        raise CatalogError(f"{source}: {node}: edges is not a list")
    catalog = Catalog(node=node, source=source, shape=shape)
    try:
        for raw in resources:
            res = _resource(raw)
            catalog.resources[res.ref] = res
        for res in catalog.resources.values():
            catalog.refreshes.update(_metaparam_refreshes(res))
        for edge in edges:
            src, dst, relationship = _edge_refs(edge, shape)
            if relationship == "contains":
                catalog.contains.setdefault(src, []).append(dst)
            elif relationship in REFRESH_RELATIONSHIPS:
                catalog.refreshes.add((src, dst))
    except CatalogError as exc:
        raise CatalogError(f"{source}: {node}: {exc}") from None
    return catalog


def load_catalogs(docs: Iterable[tuple[str, Any]]) -> Fleet:
    """Catalogs from already-parsed documents: `(source name, parsed JSON)` pairs.

    A document that is a list (PuppetDB's `/pdb/query/v4/catalogs` without a
    node) gives one catalog per item. A bad document, or a second catalog
    for a node already read, becomes one line in `Fleet.errors`; the rest of
    the fleet is still read.
    """
    fleet = Fleet()
    seen: dict[str, str] = {}
    for source, doc in docs:
        items = doc if isinstance(doc, list) else [doc]
        for i, item in enumerate(items):
            name = source if not isinstance(doc, list) else f"{source}[{i}]"
            try:
                catalog = parse_catalog(item, name)
            except CatalogError as exc:
                fleet.errors.append(str(exc))
                continue
            if catalog.node in seen:
                fleet.errors.append(f"{name}: {catalog.node} already read from {seen[catalog.node]}; ignored")
                continue
            seen[catalog.node] = name
            fleet.catalogs.append(catalog)
    return fleet


def read_documents(directory: Path) -> Iterable[tuple[str, Any]]:
    """(path, parsed JSON) for every *.json under `directory`, sorted; a bad file yields its error."""
    for path in sorted(directory.rglob("*.json")):
        try:
            yield str(path), json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = (exc.strerror if isinstance(exc, OSError) else "nested too deeply"
                      if isinstance(exc, RecursionError) else str(exc).splitlines()[0])
            yield str(path), _Unreadable(f"{path}: not JSON: {reason}")


class _Unreadable:
    """A file that could not be parsed; `parse_catalog` reports its message."""

    def __init__(self, message: str):
        self.message = message


def load_catalog_dir(directory: str | Path) -> Fleet:
    directory = Path(directory)
    if not directory.is_dir():
        raise CatalogError(f"{directory}: not a directory")
    docs = list(read_documents(directory))
    fleet = load_catalogs((s, d) for s, d in docs if not isinstance(d, _Unreadable))
    fleet.errors[:0] = [d.message for _, d in docs if isinstance(d, _Unreadable)]
    if not docs:
        fleet.errors.append(f"{directory}: no *.json catalogs")
    return fleet
