"""How the body of a large frame is protected (internal; the wire format is in :mod:`._framing`).

Two modes, chosen per connection by the parent in the handshake:

* **MAC only** (``encrypt=False``): the bytes travel as they are; a Poly1305 tag under the
  frame's one-time key covers header and body.
* **AEAD** (``encrypt=True``): the body is encrypted with AES-256-GCM under the direction's
  session key, the nonce is the frame's sequence number, and the header (sent in clear: the
  reader needs the sizes) is the associated data. The tag takes the Poly1305 tag's place, so
  frames have the same size in both modes.

Both are streaming: a sender seals a body chunk by chunk (AEAD into a reusable scratch buffer,
never into the caller's arrays); a receiver feeds each chunk as it lands in its destination
(AEAD decrypts it there, in place) and checks the tag at the end, before anything is unpickled.
AES-GCM runs at ~10 GB/s on our VMs (VAES), about Poly1305's speed; a frame of up to 2^36 bytes
is allowed under one nonce (GCM's limit is 2^39 - 256 bits).
"""

from __future__ import annotations

import struct
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305

from jupyter_flame.errors import ChannelAuthError

GCM_MAX = (1 << 36) - 32  # bytes one GCM message may hold (2^39 - 256 bits)
_NONCE = struct.Struct("<4xQ")


def nonce(seq: int) -> bytes:
    """The 96-bit GCM nonce of frame ``seq`` (unique per key: keys are per connection and
    direction, and ``seq`` never repeats within one)."""
    return _NONCE.pack(seq)


class Feed(Protocol):
    """What the socket reads hand each chunk of a frame body to, once it is in place."""

    def update(self, view: memoryview) -> None: ...


class BodySeal(Protocol):
    copies: bool

    def seal(self, part: bytes | memoryview, out: memoryview | None) -> bytes | memoryview: ...

    def finish(self) -> bytes: ...


class MacSeal:
    """Sending side, MAC only: the parts go out as they are."""

    copies = False

    def __init__(self, fk: bytes, head: bytes) -> None:
        self._poly = Poly1305(fk)
        self._poly.update(head)

    def seal(self, part: bytes | memoryview, out: memoryview | None = None) -> bytes | memoryview:
        self._poly.update(part)
        return part

    def finish(self) -> bytes:
        return self._poly.finalize()


class AeadSeal:
    """Sending side, AEAD: each part is encrypted into ``out`` (as long as the part)."""

    copies = True

    def __init__(self, key: bytes, seq: int, aad: bytes) -> None:
        self._enc = Cipher(algorithms.AES(key), modes.GCM(nonce(seq))).encryptor()
        self._enc.authenticate_additional_data(aad)

    def seal(self, part: bytes | memoryview, out: memoryview | None) -> memoryview:
        assert out is not None and len(out) >= len(part)
        n = self._enc.update_into(part, out)
        return out[:n]

    def finish(self) -> bytes:
        self._enc.finalize()
        return self._enc.tag


class MacCheck:
    """Receiving side, MAC only."""

    def __init__(self, fk: bytes, head: bytes) -> None:
        self._poly = Poly1305(fk)
        self._poly.update(head)

    def update(self, view: memoryview) -> None:
        self._poly.update(view)

    def verify(self, tag: bytes) -> None:
        try:
            self._poly.verify(tag)
        except InvalidSignature:
            raise ChannelAuthError(
                "frame failed its MAC check (tampered payload or buffer)") from None


class AeadCheck:
    """Receiving side, AEAD: decrypts each chunk where it landed."""

    def __init__(self, key: bytes, seq: int, head: bytes) -> None:
        self._dec = Cipher(algorithms.AES(key), modes.GCM(nonce(seq))).decryptor()
        self._dec.authenticate_additional_data(head)

    def update(self, view: memoryview) -> None:
        self._dec.update_into(view, view)

    def verify(self, tag: bytes) -> None:
        try:
            self._dec.finalize_with_tag(tag)
        except InvalidTag:
            raise ChannelAuthError(
                "frame failed its AEAD check (tampered ciphertext, wrong key or replay)"
            ) from None


class SmallAead:
    """Whole small frames under AES-256-GCM (one-shot: they fit in memory by definition)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key = key

    def seal(self, seq: int, fixed: bytes, payload: bytes) -> bytes:
        return self._aead.encrypt(nonce(seq), payload, fixed)

    def open(self, seq: int, fixed: bytes, body: bytes | memoryview) -> bytes:
        try:
            return self._aead.decrypt(nonce(seq), bytes(body), fixed)
        except InvalidTag:
            raise ChannelAuthError(
                "frame failed its AEAD check (wrong key, tampering or replay)") from None
