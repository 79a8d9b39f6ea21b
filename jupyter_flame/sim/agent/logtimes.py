"""When each line of a container log was written: the stamper and its index files.

Container processes write straight into their log files (``.process``), so no
line passes through the agent. For ``timestamps`` and ``sinceSeconds`` the
:class:`Stamper` (on the kubelet API's thread) tails the log of every running
container every :data:`INTERVAL` seconds and records, for each new line, its
end offset and the time it saw it, in ``.<container>.<id>.times`` beside the
log (``<offset> <unix time>`` per line). A time is therefore when the stamper
saw the line, at most :data:`INTERVAL` s after the process wrote it (a runtime's
CRI log stamps a line when it reads it from the pipe; same idea, finer grain).
Lines no index covers (written while no agent ran) get the time of the next
stamped line, else the log file's modification time.
"""

from __future__ import annotations

import bisect
import datetime as dt
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["INTERVAL", "Stamper", "read_index", "rfc3339nano", "times_path"]

INTERVAL = 0.1


def times_path(log: Path, container: str, container_id: str) -> Path:
    """The index of container instance ``container_id`` whose log is ``log``."""
    return log.with_name(f".{container}.{container_id.rpartition('/')[2]}.times")


def rfc3339nano(when: float) -> bytes:
    """``2006-01-02T15:04:05.000000000Z``: the kubelet's fixed-width RFC 3339 nano."""
    stamp = dt.datetime.fromtimestamp(when, dt.timezone.utc)
    nanos = int(round((when % 1) * 1e9)) % 1_000_000_000
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z".encode()


@dataclass
class Index:
    """Line end offsets (ascending) and the times they were seen."""

    ends: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    fallback: float = 0.0

    def time_of(self, end: int) -> float:
        """The time of the line ending at byte ``end`` (exclusive)."""
        i = bisect.bisect_left(self.ends, end)
        return self.times[i] if i < len(self.times) else self.fallback


def read_index(path: Path, fallback: float) -> Index:
    """Load an index file; ``fallback`` is the time of lines it does not cover."""
    index = Index(fallback=fallback)
    try:
        text = path.read_text()
    except OSError:
        return index
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            index.ends.append(int(parts[0]))
            index.times.append(float(parts[1]))
    return index


@dataclass
class _Tail:
    fd: int
    index: Path
    offset: int = 0


class Stamper:
    """Stamps the lines of running containers' logs as they appear.

    :meth:`track` the running instances (by container id) on each pass, then
    :meth:`tick`; instances no longer tracked get a last read and are closed.
    """

    def __init__(self) -> None:
        self._tails: dict[str, _Tail] = {}

    def tick(self, running: dict[str, tuple[Path, str]]) -> None:
        """One pass.

        Parameters
        ----------
        running : dict
            Container id to (log path, container name) of every running instance.
        """
        for cid, (log, name) in running.items():
            if cid not in self._tails:
                try:
                    fd = os.open(log, os.O_RDONLY)
                except OSError:
                    continue  # not created yet: the next pass
                self._tails[cid] = _Tail(fd, times_path(log, name, cid))
        now = time.time()
        for cid in list(self._tails):
            tail = self._tails[cid]
            self._read(tail, now)
            if cid not in running:
                os.close(tail.fd)
                del self._tails[cid]

    def _read(self, tail: _Tail, now: float) -> None:
        data = os.pread(tail.fd, 1 << 20, tail.offset)
        while data:
            last = data.rfind(b"\n")
            if last < 0:
                return  # a partial line: stamped once it ends
            entries, pos = [], 0
            while (nl := data.find(b"\n", pos, last + 1)) >= 0:
                pos = nl + 1
                entries.append(f"{tail.offset + pos} {now:.6f}\n")
            with tail.index.open("a") as fh:
                fh.write("".join(entries))
            tail.offset += last + 1
            data = os.pread(tail.fd, 1 << 20, tail.offset)

    def close(self) -> None:
        """Close every tracked log."""
        for tail in self._tails.values():
            os.close(tail.fd)
        self._tails.clear()
