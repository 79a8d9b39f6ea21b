"""Bearer tokens: the admin token and service-account JWTs (HS256-signed).

Service-account tokens look like the real ones (a JWT with the
``kubernetes.io`` claims) and are checked on use: signature, expiry, and
that the service account still exists with the same uid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .rbac import MASTERS, UserInfo

ISSUER = "https://kubernetes.default.svc.cluster.local"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class ServiceAccountClaim:
    """What a verified service-account token says."""

    namespace: str
    name: str
    uid: str
    expires: int | None
    secret: str | None = None
    secret_uid: str | None = None


class TokenAuthority:
    """Issues and checks the tokens the server accepts.

    Parameters
    ----------
    admin_token
        The token of the cluster admin (group ``system:masters``); random if omitted.
    """

    def __init__(self, admin_token: str | None = None) -> None:
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self._key = secrets.token_bytes(32)

    def admin(self) -> UserInfo:
        """The admin user."""
        return UserInfo("kubernetes-admin", (MASTERS, "system:authenticated"))

    def issue(self, namespace: str, name: str, uid: str, expiration_seconds: int | None,
              audiences: list[str] | None = None, bound: dict[str, Any] | None = None) -> tuple[str, int | None]:
        """Sign a service-account token; returns (token, expiry epoch or None)."""
        now = int(time.time())
        exp = now + expiration_seconds if expiration_seconds else None
        claims: dict[str, Any] = {
            "aud": audiences or [ISSUER], "iat": now, "iss": ISSUER, "nbf": now,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
            "jti": secrets.token_hex(8),
        }
        if exp:
            claims["exp"] = exp
        if bound:
            claims["kubernetes.io"][bound["kind"].lower()] = {"name": bound["name"], "uid": bound.get("uid", "")}
        header = _b64(json.dumps({"alg": "HS256", "kid": "sim", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{sig}", exp

    def verify(self, token: str) -> ServiceAccountClaim | None:
        """Check a service-account token; ``None`` when invalid or expired."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        want = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(want, _unb64(parts[2])):
                return None
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, json.JSONDecodeError):
            return None
        exp = claims.get("exp")
        if exp is not None and exp < time.time():
            return None
        k8s = claims.get("kubernetes.io") or {}
        sa = k8s.get("serviceaccount") or {}
        secret = k8s.get("secret") or {}
        return ServiceAccountClaim(k8s.get("namespace", ""), sa.get("name", ""), sa.get("uid", ""), exp,
                                   secret.get("name"), secret.get("uid"))


def service_account_user(namespace: str, name: str, uid: str) -> UserInfo:
    """The user a service-account token authenticates as."""
    return UserInfo(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        uid,
    )
