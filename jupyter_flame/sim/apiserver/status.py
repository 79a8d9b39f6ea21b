"""Kubernetes ``Status`` objects and the API errors that carry them.

Every failure the stand-in API server reports is an :class:`ApiError` whose
``status`` is the exact ``meta/v1 Status`` body a real kube-apiserver sends
(same ``message`` wording, ``reason``, ``details`` and ``code``).
"""

from __future__ import annotations

from typing import Any


def status_body(
    code: int,
    reason: str,
    message: str,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a failure ``Status`` dict.

    Parameters
    ----------
    code
        HTTP status code.
    reason
        Machine reason (``NotFound``, ``Forbidden``...).
    message
        Human message, worded like the real server.
    details
        Optional ``details`` (name, group, kind, causes).
    """
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        body["details"] = details
    body["code"] = code
    return body


def success_body(code: int = 200, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a success ``Status`` dict (what ``binding`` and deletecollection return)."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        body["details"] = details
    body["code"] = code
    return body


class ApiError(Exception):
    """An API failure with its HTTP code and Kubernetes ``Status`` body."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(status["message"])
        self.status = status
        self.code: int = status["code"]


def _details(resource: str, group: str, name: str | None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = resource
    return details


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    """``404 NotFound``: ``pods "x" not found``."""
    msg = f'{_qualified(resource, group)} "{name}" not found'
    return ApiError(status_body(404, "NotFound", msg, _details(resource, group, name)))


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    """``409 AlreadyExists``: ``pods "x" already exists``."""
    msg = f'{_qualified(resource, group)} "{name}" already exists'
    return ApiError(status_body(409, "AlreadyExists", msg, _details(resource, group, name)))


def conflict(resource: str, name: str, group: str = "", why: str | None = None) -> ApiError:
    """``409 Conflict`` for a stale ``resourceVersion`` (or ``why``)."""
    why = why or (
        "the object has been modified; please apply your changes to the latest version and try again"
    )
    msg = f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {why}'
    return ApiError(status_body(409, "Conflict", msg, _details(resource, group, name)))


def forbidden(resource: str, name: str | None, group: str, why: str) -> ApiError:
    """``403 Forbidden``: ``pods "x" is forbidden: <why>``."""
    qualified = _qualified(resource, group)
    head = f'{qualified} "{name}"' if name else qualified
    msg = f"{head} is forbidden: {why}"
    return ApiError(status_body(403, "Forbidden", msg, _details(resource, group, name)))


def bad_request(message: str) -> ApiError:
    """``400 BadRequest`` with a free message."""
    return ApiError(status_body(400, "BadRequest", message))


def too_large(limit: int) -> ApiError:
    """``413 RequestEntityTooLarge`` for a body over ``limit`` bytes."""
    return ApiError(status_body(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}"))


def method_not_allowed() -> ApiError:
    """``405 MethodNotAllowed``."""
    return ApiError(
        status_body(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    )


def unsupported_media_type(content_type: str) -> ApiError:
    """``415 UnsupportedMediaType``."""
    return ApiError(
        status_body(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got "{content_type}")')
    )


def unauthorized() -> ApiError:
    """``401 Unauthorized``."""
    return ApiError(status_body(401, "Unauthorized", "Unauthorized"))


def gone(message: str) -> ApiError:
    """``410 Gone`` / reason ``Expired`` (too old resourceVersion)."""
    return ApiError(status_body(410, "Expired", message))


def page_not_found() -> ApiError:
    """The 404 a real server sends for an unknown path."""
    return ApiError(status_body(404, "NotFound", "the server could not find the requested resource", {}))


class FieldError:
    """One validation cause (``field``, ``reason``, ``message``)."""

    def __init__(self, field: str, reason: str, detail: str, value: Any = None, *, show_value: bool = False) -> None:
        self.field = field
        self.reason = reason
        self.detail = detail
        self.value = value
        self.show_value = show_value

    _TYPES = {
        "FieldValueRequired": "Required value",
        "FieldValueInvalid": "Invalid value",
        "FieldValueForbidden": "Forbidden",
        "FieldValueNotSupported": "Unsupported value",
        "FieldValueDuplicate": "Duplicate value",
        "FieldValueNotFound": "Not found",
        "FieldValueTooLong": "Too long",
    }

    def message(self) -> str:
        """The cause message as the real server words it (without the field)."""
        kind = self._TYPES.get(self.reason, "Invalid value")
        if self.reason == "FieldValueNotFound":
            import json

            return f"{kind}: {json.dumps(self.value)}"
        if self.show_value:
            import json

            kind = f"{kind}: {json.dumps(self.value)}"
        return f"{kind}: {self.detail}" if self.detail else kind

    def full(self) -> str:
        """``field: Type: detail``."""
        return f"{self.field}: {self.message()}"


def invalid(kind: str, name: str, errors: list[FieldError], group: str = "") -> ApiError:
    """``422 Invalid``: ``Pod "x" is invalid: spec.containers: Required value``."""
    qualified = f"{kind}.{group}" if group else kind
    if len(errors) == 1:
        agg = errors[0].full()
    else:
        agg = "[" + ", ".join(e.full() for e in errors) + "]"
    msg = f'{qualified} "{name}" is invalid: {agg}'
    details: dict[str, Any] = {"name": name} if name else {}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [
        {"reason": e.reason, "message": e.message(), "field": e.field} for e in errors
    ]
    return ApiError(status_body(422, "Invalid", msg, details))
