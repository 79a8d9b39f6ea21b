"""Label and field selectors: parsing and matching (pure, no I/O).

Label selector grammar (as in ``k8s.io/apimachinery/pkg/labels``)::

    a=b, a==b, a!=b, a in (x,y), a notin (x,y), a, !a

Field selectors support ``=``, ``==`` and ``!=`` on the fields each kind
declares (see :data:`FIELDS`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .status import ApiError, bad_request


@dataclass(frozen=True)
class Requirement:
    """One selector term: ``key op values``."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether ``labels`` satisfy this requirement."""
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("=", "in"):
            return has and value in self.values
        # "!=" and "notin" also match objects without the key
        return not has or value not in self.values


_KEY = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$")


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


_SET = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")
_EQ = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*(.*)$")


def parse_labels(text: str | None) -> list[Requirement]:
    """Parse a label selector; raise a 400 ``ApiError`` on bad syntax."""
    if not text:
        return []
    reqs = []
    for term in _split_top(text):
        m = _SET.match(term)
        if m:
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(_check_key(m.group(1), text), m.group(2), values))
            continue
        m = _EQ.match(term)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append(Requirement(_check_key(m.group(1), text), op, (m.group(3).strip(),)))
            continue
        if term.startswith("!"):
            reqs.append(Requirement(_check_key(term[1:].strip(), text), "!"))
            continue
        reqs.append(Requirement(_check_key(term, text), "exists"))
    return reqs


def _check_key(key: str, text: str) -> str:
    if not _KEY.match(key):
        raise bad_request(f"unable to parse requirement: invalid label key \"{key}\"")
    return key


def match_labels(reqs: list[Requirement], obj: dict[str, Any]) -> bool:
    """Whether the object's ``metadata.labels`` satisfy every requirement."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


def _get(path: str) -> Callable[[dict[str, Any]], str]:
    def read(obj: dict[str, Any]) -> str:
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return read


_META = ("metadata.name", "metadata.namespace")
_INVOLVED = tuple(
    f"involvedObject.{f}"
    for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
)

#: Field labels each plural supports (besides metadata.name/namespace).
FIELDS: dict[str, tuple[str, ...]] = {
    "pods": ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"),
    "events": _INVOLVED + ("reason", "reportingComponent", "source", "type"),
    "secrets": ("type",),
    "namespaces": ("status.phase",),
    "nodes": ("spec.unschedulable",),
}


def _event_source(obj: dict[str, Any]) -> str:
    return str((obj.get("source") or {}).get("component") or obj.get("reportingComponent") or "")


@dataclass(frozen=True)
class FieldRequirement:
    """One field selector term."""

    field: str
    op: str  # "=" or "!="
    value: str

    def matches(self, obj: dict[str, Any]) -> bool:
        """Whether the object satisfies the term."""
        got = _event_source(obj) if self.field == "source" else _get(self.field)(obj)
        if self.field == "spec.hostNetwork" and got == "":
            got = "false"
        return (got == self.value) == (self.op == "=")


def parse_fields(text: str | None, plural: str) -> list[FieldRequirement]:
    """Parse a field selector for ``plural``; unknown field labels give 400."""
    if not text:
        return []
    allowed = _META + FIELDS.get(plural, ())
    out = []
    for term in _split_top(text):
        m = _EQ.match(term)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        key, op, value = m.group(1), m.group(2), m.group(3).strip()
        if key not in allowed:
            raise bad_request(f'field label not supported: {key}')
        out.append(FieldRequirement(key, "!=" if op == "!=" else "=", value))
    return out


def match_fields(reqs: list[FieldRequirement], obj: dict[str, Any]) -> bool:
    """Whether the object satisfies every field requirement."""
    return all(r.matches(obj) for r in reqs)


@dataclass(frozen=True)
class Selector:
    """A label selector and a field selector together."""

    labels: tuple[Requirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, label_text: str | None, field_text: str | None, plural: str) -> Selector:
        """Parse both selectors (400 ``ApiError`` on bad input)."""
        return cls(tuple(parse_labels(label_text)), tuple(parse_fields(field_text, plural)))

    def matches(self, obj: dict[str, Any] | None) -> bool:
        """Whether ``obj`` satisfies both selectors (``None`` never matches)."""
        if obj is None:
            return False
        return match_labels(list(self.labels), obj) and match_fields(list(self.fields), obj)


__all__ = ["ApiError", "FieldRequirement", "Requirement", "Selector", "parse_fields", "parse_labels"]
