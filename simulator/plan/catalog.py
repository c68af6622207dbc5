"""One node's catalog, reduced to what the plan needs, whatever shape it came in.

Puppet's catalog JSON, PuppetDB's wire format and PuppetDB's query API say
the same thing three ways; the importers turn each into a `Catalog`:
resources by reference, containment (parent -> children) and refresh
relationships (source -> target: "a change of source refreshes target"),
not yet expanded from containers to their leaves. The analysis does that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


class CatalogError(ValueError):
    """A catalog the plan cannot read; the message names the file or node, on one line."""


@dataclass(frozen=True)
class Resource:
    type: str  # capitalised per segment, as Puppet writes it: Apache::Vhost
    title: str
    file: str | None = None
    line: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    exported: bool = False

    @property
    def ref(self) -> str:
        return f"{self.type}[{self.title}]"


@dataclass
class Catalog:
    node: str
    source: str  # the file (or other origin) it was read from: named in every message
    shape: str  # puppet | wire | query
    resources: dict[str, Resource] = field(default_factory=dict)
    contains: dict[str, list[str]] = field(default_factory=dict)
    refreshes: set[tuple[str, str]] = field(default_factory=set)


_REF = re.compile(r"^([A-Za-z][\w:]*)\[(.*)\]$", re.S)


def type_name(name: str) -> str:
    """`apache::vhost` -> `Apache::Vhost`: how a catalog spells a type in references."""
    return "::".join(part[:1].upper() + part[1:] for part in name.split("::"))


def ref(type_: str, title: str) -> str:
    type_ = type_name(type_)
    if type_ == "Class":  # Class['profile::web'] is stored as Class[Profile::Web]
        title = type_name(title)
    return f"{type_}[{title}]"


def parse_ref(text: str) -> str | None:
    """`Trigger['x']`-like reference text -> the canonical `Trigger[x]`; None if not a reference."""
    match = _REF.match(text.strip()) if isinstance(text, str) else None
    if not match:
        return None
    title = match.group(2).strip()
    if len(title) >= 2 and title[0] == title[-1] and title[0] in "'\"":
        title = title[1:-1]
    return ref(match.group(1), title)
