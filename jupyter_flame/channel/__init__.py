"""The kernel-runner channel: authenticated, sequenced, MAC'd frames with buffers out of band.

``channel`` (``Channel``, ``Listener``, ``connect``), ``_framing`` (frame layout and MACs),
``_conn`` (the socket and its staging buffer), ``_baton`` (who reads a channel), ``protocol``
(the wire messages, frozen dataclasses).
"""

from __future__ import annotations

from jupyter_flame._lazy import lazy_exports

__all__ = ["Channel", "ChannelClosedError", "Listener", "connect"]

__getattr__, __dir__ = lazy_exports(__name__, {n: "channel" for n in __all__}, globals())
