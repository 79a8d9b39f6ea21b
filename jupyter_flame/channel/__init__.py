"""The kernel-runner channel: authenticated (optionally AES-GCM encrypted), sequenced frames with
buffers out of band.

``channel`` (``Channel``), ``listener`` (``Listener``, the parent's side), ``dial``
(``connect``, the runner's side), ``_framing`` (frame layout and MACs, the handshake), ``_seal``
(MAC-only or AEAD frame bodies), ``_conn`` (the socket and its staging buffer), ``_baton`` (who
reads a channel), ``protocol`` (the wire messages, frozen dataclasses).
"""

from __future__ import annotations

from jupyter_flame._lazy import lazy_exports

__all__ = ["Channel", "ChannelClosedError", "Listener", "connect"]

_WHERE = {"Channel": "channel", "ChannelClosedError": "channel", "Listener": "listener",
          "connect": "dial"}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, globals())
