"""Image "pulls": an allow-list stands in for a registry.

Pure: no I/O. An image is pullable when its reference (or its reference with
the default ``:latest`` tag, or a ``docker.io/library/`` prefix stripped) is on
the list. The wording follows containerd and the kubelet so that clients
reading events and container states see what a cluster shows.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DEFAULT_IMAGES", "ImageStore", "normalize_image"]

DEFAULT_IMAGES = ("jupyter-flame/notebook:local",)


def normalize_image(image: str) -> str:
    """Canonical form of an image reference for allow-list matching.

    Parameters
    ----------
    image : str
        ``python``, ``python:3.11``, ``docker.io/library/python:3.11`` ...

    Returns
    -------
    str
        The reference without ``docker.io/`` / ``library/`` and with a tag
        (``latest`` when none and no digest).
    """
    ref = image.strip()
    for prefix in ("docker.io/", "index.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
    if ref.startswith("library/"):
        ref = ref[len("library/") :]
    last = ref.rsplit("/", 1)[-1]
    if "@" not in ref and ":" not in last:
        ref += ":latest"
    return ref


class ImageStore:
    """Which images can be pulled, and which a node already holds.

    Parameters
    ----------
    allowed : iterable of str
        Images the fake registry serves.
    """

    def __init__(self, allowed: Iterable[str] = DEFAULT_IMAGES) -> None:
        self.allowed = {normalize_image(i) for i in allowed if i.strip()}
        self._present: set[tuple[str, str]] = set()

    def pullable(self, image: str) -> bool:
        """Whether the registry serves ``image``."""
        return normalize_image(image) in self.allowed

    def present(self, node: str, image: str) -> bool:
        """Whether ``node`` pulled ``image`` before."""
        return (node, normalize_image(image)) in self._present

    def mark_present(self, node: str, image: str) -> None:
        """Record a successful pull on ``node``."""
        self._present.add((node, normalize_image(image)))

    @staticmethod
    def needs_pull(policy: str | None, image: str, present: bool) -> bool:
        """The kubelet's pull decision for ``imagePullPolicy``."""
        if not policy:
            policy = "Always" if normalize_image(image).endswith(":latest") else "IfNotPresent"
        if policy == "Never":
            return False
        return policy == "Always" or not present

    @staticmethod
    def pull_error(image: str) -> str:
        """containerd's message for an image the registry does not have."""
        ref = normalize_image(image)
        return (
            f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull '
            f'and unpack image "{ref}": failed to resolve reference "{ref}": '
            f"{ref}: not found"
        )
