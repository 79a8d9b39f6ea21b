"""GPU discovery and exclusive allocation for the local backend.

Discovery asks NVML (when ``pynvml`` is importable) or ``nvidia-smi`` which GPUs this machine
has, then keeps only those the kernel may use: a ``CUDA_VISIBLE_DEVICES`` already set in the
kernel's environment (by a scheduler, a container runtime or the user) names the devices that
are ours, by index or UUID (prefixes allowed, as CUDA allows them).

:class:`GpuAllocator` hands those GPUs to runners exclusively: a runner booted with ``--gpu N``
gets ``CUDA_VISIBLE_DEVICES=<uuid,...>`` naming N devices no other live runner holds. Runners
with ``--gpu 0`` are not touched: they inherit the kernel's environment unchanged (so they see
what the kernel sees, and may share a GPU with the kernel itself, as a plain subprocess would).

The allocator is pure (no I/O) and thread-safe; tests give it a list of :class:`GpuInfo`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from jupyter_flame.errors import BootError, ConfigError

__all__ = ["SYSTEM_GPUS", "GpuAllocator", "GpuInfo", "SystemGpus", "discover_gpus", "probe_gpus"]

_QUERY = ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class GpuInfo:
    """One GPU of this machine.

    Attributes
    ----------
    index:
        The physical index, as ``nvidia-smi`` numbers it.
    uuid:
        ``GPU-...``; what runners get in ``CUDA_VISIBLE_DEVICES`` (stable whatever the order).
    name:
        The product name (``NVIDIA H100 80GB HBM3``).
    memory_total:
        Memory in MiB.
    """

    index: int
    uuid: str
    name: str
    memory_total: int

    @property
    def device_id(self) -> str:
        """The identifier used in ``CUDA_VISIBLE_DEVICES``: the UUID, else the index."""
        return self.uuid or str(self.index)


def _parse_smi(text: str) -> list[GpuInfo]:
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        try:
            memory = int(float(parts[3]))
        except ValueError:
            memory = 0
        gpus.append(GpuInfo(int(parts[0]), parts[1], ",".join(parts[2:-1]), memory))
    return gpus


def _from_nvml() -> list[GpuInfo] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            dev = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid, name = pynvml.nvmlDeviceGetUUID(dev), pynvml.nvmlDeviceGetName(dev)
            gpus.append(GpuInfo(
                i,
                uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                name.decode() if isinstance(name, bytes) else str(name),
                int(pynvml.nvmlDeviceGetMemoryInfo(dev).total) // (1024 * 1024),
            ))
        return gpus
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _visible(gpus: list[GpuInfo], visible: str | None) -> list[GpuInfo]:
    """Keep the GPUs named by a ``CUDA_VISIBLE_DEVICES`` value (``None``: all of them)."""
    if visible is None:
        return gpus
    kept: list[GpuInfo] = []
    for item in (v.strip() for v in visible.split(",")):
        if not item:
            continue
        match = [g for g in gpus if (item.isdigit() and int(item) == g.index)
                 or (g.uuid and item.startswith("GPU-") and g.uuid.startswith(item))]
        if not match:
            break  # CUDA stops at the first device it cannot resolve (e.g. "-1")
        if match[0] not in kept:
            kept.append(match[0])
    return kept


def probe_gpus(env: Mapping[str, str] | None = None, *, nvml: bool = True,
               timeout: float = 10.0) -> tuple[list[GpuInfo], str]:
    """Discover the GPUs the kernel may use, and say where the answer came from.

    Returns the GPUs and a short note for messages: ``"nvidia-smi not found"``, ``"nvidia-smi
    reported no devices"``, ``"CUDA_VISIBLE_DEVICES='' hides them"``... ``env`` defaults to
    ``os.environ`` (for ``PATH`` and ``CUDA_VISIBLE_DEVICES``); ``nvml=False`` skips NVML and
    asks ``nvidia-smi`` only.
    """
    env = os.environ if env is None else env
    found = _from_nvml() if nvml else None
    source = "NVML"
    if found is None:
        source = "nvidia-smi"
        exe = shutil.which("nvidia-smi", path=env.get("PATH", os.defpath))
        if exe is None:
            return [], "nvidia-smi not found"
        try:
            proc = subprocess.run([exe, *_QUERY], capture_output=True, text=True,
                                  timeout=timeout, env=dict(env), check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [], f"nvidia-smi failed: {exc}"
        if proc.returncode != 0:
            why = (proc.stdout + proc.stderr).strip().splitlines()
            return [], f"nvidia-smi failed: {why[0] if why else f'exit code {proc.returncode}'}"
        found = _parse_smi(proc.stdout)
    if not found:
        return [], f"{source} reported no devices"
    visible = env.get("CUDA_VISIBLE_DEVICES")
    gpus = _visible(found, visible)
    if not gpus:
        return [], f"CUDA_VISIBLE_DEVICES={visible!r} hides its {len(found)} GPUs"
    return gpus, source


def discover_gpus(env: Mapping[str, str] | None = None) -> list[GpuInfo]:
    """The GPUs this kernel may hand to runners (see :func:`probe_gpus`)."""
    return probe_gpus(env)[0]


def _n(count: int) -> str:
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


class GpuAllocator:
    """Hands GPUs to runners, each to at most one runner at a time.

    Parameters
    ----------
    gpus:
        The GPUs to hand out (from :func:`discover_gpus`, or made up in tests).
    none_reason:
        Why ``gpus`` is empty, for the error message (``"nvidia-smi not found"``).
    """

    def __init__(self, gpus: Iterable[GpuInfo], *, none_reason: str = "no GPUs found") -> None:
        self.gpus: tuple[GpuInfo, ...] = tuple(gpus)
        self.none_reason = none_reason
        self._held: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_system(cls, env: Mapping[str, str] | None = None) -> GpuAllocator:
        """An allocator over the GPUs :func:`probe_gpus` finds."""
        gpus, note = probe_gpus(env)
        return cls(gpus, none_reason=note)

    def held(self) -> dict[str, list[str]]:
        """Runner id -> device ids, for the runners holding GPUs now."""
        with self._lock:
            return {k: list(v) for k, v in self._held.items()}

    def free(self, exclude: Mapping[str, Sequence[str]] | None = None) -> list[str]:
        """Device ids no runner holds (``exclude``: also held elsewhere, by runner id)."""
        with self._lock:
            return self._free(exclude or {})

    def _free(self, exclude: Mapping[str, Sequence[str]]) -> list[str]:
        taken = {d for ids in [*self._held.values(), *exclude.values()] for d in ids}
        return [g.device_id for g in self.gpus if g.device_id not in taken]

    def allocate(self, runner_id: str, n: int, *, pool: str = "",
                 exclude: Mapping[str, Sequence[str]] | None = None) -> list[str]:
        """Give ``runner_id`` ``n`` GPUs of its own and return their device ids.

        ``exclude`` names GPUs held by runners this allocator does not track (runners of
        other kernels on this machine), as runner id -> device ids. ``n <= 0`` returns ``[]``.

        Raises
        ------
        ConfigError
            ``n`` is more than this machine has (never satisfiable).
        BootError
            Not enough GPUs are free now (``reason="GPUsBusy"``); the message names the
            runners holding them.
        """
        if n <= 0:
            return []
        where = f"Pool {pool!r}" if pool else f"Runner {runner_id!r}"
        with self._lock:
            if runner_id in self._held:
                raise ConfigError(f"Runner {runner_id!r} already holds GPUs "
                                  f"{', '.join(self._held[runner_id])}.", runner=runner_id)
            total = len(self.gpus)
            if total == 0:
                raise ConfigError(
                    f"--gpu {n} asks for {'a GPU' if n == 1 else f'{n} GPUs'}, but this machine "
                    f"has none ({self.none_reason}). Drop --gpu, or run on Kubernetes with "
                    "--backend kubernetes.", pool=pool or None, runner=runner_id)
            if n > total:
                raise ConfigError(
                    f"{where} asks for {_n(n)} but this machine has only {_n(total)}. Lower "
                    f"--gpu to at most {total}, or run on Kubernetes with --backend kubernetes.",
                    pool=pool or None, runner=runner_id)
            exclude = exclude or {}
            free = self._free(exclude)
            if n > len(free):
                holders = sorted({r for r, ids in [*self._held.items(), *exclude.items()]
                                  if ids and any(g.device_id in ids for g in self.gpus)})
                in_use = total - len(free)
                raise BootError(
                    f"{where} asks for {_n(n)} but only {len(free)} of this machine's "
                    f"{_n(total)} {'is' if len(free) == 1 else 'are'} free ({in_use} in use by "
                    f"runner{'s' if len(holders) != 1 else ''} {', '.join(holders)}). Lower "
                    "--gpu, or wait for those runners to finish (`%flame shutdown`).",
                    reason="GPUsBusy", pool=pool or None, runner=runner_id)
            chosen = free[:n]
            self._held[runner_id] = chosen
            return list(chosen)

    def release(self, runner_id: str) -> list[str]:
        """Give back the GPUs of ``runner_id`` (none held: nothing happens); returns them."""
        with self._lock:
            return self._held.pop(runner_id, [])


class SystemGpus:
    """This machine's GPUs, discovered once (on first use, thread-safe) and shared by every
    :class:`~jupyter_flame.backends.local.LocalBackend` given the same instance; the default
    instance :data:`SYSTEM_GPUS` is the process-wide one."""

    def __init__(self) -> None:
        self._allocator: GpuAllocator | None = None
        self._lock = threading.Lock()

    def allocator(self) -> GpuAllocator:
        with self._lock:
            if self._allocator is None:
                self._allocator = GpuAllocator.from_system()
            return self._allocator


#: The process-wide discovered GPUs.
SYSTEM_GPUS = SystemGpus()
