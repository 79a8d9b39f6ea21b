"""Deterministic allocators for pod IPs and GPU device ids.

Pure: no I/O. Every pod gets a loopback address of its own (``127.0.0.2``
onwards, never ``127.0.0.1``, which is the nodes' host IP), so servers in
different pods can bind the same port. GPU ids are per node and exclusive.
"""

from __future__ import annotations

import ipaddress

__all__ = ["IpAllocator", "GpuAllocator", "HOST_IP"]

HOST_IP = "127.0.0.1"
_FIRST = int(ipaddress.IPv4Address("127.0.0.2"))
_LAST = int(ipaddress.IPv4Address("127.255.255.254"))


class IpAllocator:
    """Hands out the lowest free loopback address, skipping ``.0`` and ``.255``.

    Addresses already in use (pods found running when the agent starts) are
    reserved with :meth:`reserve`.
    """

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}
        self._by_owner: dict[str, str] = {}

    def allocate(self, owner: str) -> str:
        """Address for ``owner`` (a pod uid); the same one on repeated calls."""
        if owner in self._by_owner:
            return self._by_owner[owner]
        value = _FIRST
        while value <= _LAST:
            ip = str(ipaddress.IPv4Address(value))
            last_octet = value & 0xFF
            if last_octet not in (0, 255) and ip not in self._owner:
                self.reserve(owner, ip)
                return ip
            value += 1
        raise RuntimeError("no loopback address left for pods")

    def reserve(self, owner: str, ip: str) -> None:
        """Mark ``ip`` as used by ``owner``."""
        self._owner[ip] = owner
        self._by_owner[owner] = ip

    def release(self, owner: str) -> None:
        """Free the address of ``owner``, if any."""
        ip = self._by_owner.pop(owner, None)
        if ip is not None:
            self._owner.pop(ip, None)

    def get(self, owner: str) -> str | None:
        """The address of ``owner``, if allocated."""
        return self._by_owner.get(owner)


class GpuAllocator:
    """Exclusive GPU ids ``0..count-1`` of one node.

    Parameters
    ----------
    count : int
        Devices on the node.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._owner: dict[int, str] = {}

    def allocate(self, owner: str, n: int) -> list[int] | None:
        """The ``n`` lowest free ids for ``owner``, or None if too few are free."""
        mine = sorted(i for i, o in self._owner.items() if o == owner)
        if len(mine) >= n:
            return mine[:n]
        free = [i for i in range(self.count) if i not in self._owner]
        if len(free) < n - len(mine):
            return None
        for i in free[: n - len(mine)]:
            self._owner[i] = owner
        return sorted(i for i, o in self._owner.items() if o == owner)

    def release(self, owner: str) -> None:
        """Free the ids of ``owner``."""
        for i in [i for i, o in self._owner.items() if o == owner]:
            del self._owner[i]

    def free(self) -> int:
        """How many ids are free."""
        return self.count - len(self._owner)
