"""URL parsing: which resource, namespace, name and subresource a path names (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from .resources import Resource, lookup
from .status import ApiError, page_not_found


@dataclass(frozen=True)
class Route:
    """A resource request path, decoded.

    ``namespace`` is ``None`` for cluster-scoped resources and for lists
    across all namespaces; ``name`` is ``""`` for collections.
    """

    resource: Resource
    namespace: str | None
    name: str = ""
    subresource: str = ""

    def verb(self, method: str, watch: bool) -> str:
        """The authorization verb of ``method`` on this route."""
        if method == "GET":
            if watch:
                return "watch"
            return "get" if self.name else "list"
        if method == "POST":
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        if method == "DELETE":
            return "delete" if self.name else "deletecollection"
        return method.lower()


def parse(path: str) -> Route | None:
    """Decode ``/api/v1/...`` or ``/apis/<g>/<v>/...`` paths; ``None`` if not a resource path."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if rest and rest[0] == "watch":
        raise page_not_found()

    def res_of(plural: str) -> Resource:
        r = lookup(group, version, plural)
        if r is None:
            raise page_not_found()
        return r

    namespaces = lookup("", "v1", "namespaces")
    assert namespaces is not None
    if rest[0] == "namespaces" and len(rest) >= 3:
        if not group and len(rest) == 3 and (rest[2] in namespaces.subresources or rest[2] == "finalize"):
            return Route(namespaces, None, rest[1], rest[2])
        r = res_of(rest[2])
        if not r.namespaced:
            raise page_not_found()
        if len(rest) > 5:
            raise page_not_found()
        name = rest[3] if len(rest) > 3 else ""
        sub = rest[4] if len(rest) > 4 else ""
        return _checked(Route(r, rest[1], name, sub))
    r = res_of(rest[0])
    if len(rest) > 3:
        raise page_not_found()
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if r.namespaced and name:
        raise page_not_found()
    return _checked(Route(r, None, name, sub))


def _checked(route: Route) -> Route:
    if route.subresource and route.subresource not in route.resource.subresources:
        raise page_not_found()
    return route


__all__ = ["ApiError", "Route", "parse"]
