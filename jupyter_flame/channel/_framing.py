"""Wire format, key schedule, handshake and frame sealing/opening of :mod:`jupyter_flame.channel.channel`
(internal; the socket plumbing is in :mod:`jupyter_flame.channel._conn`).

Handshake (plain bytes, no pickle)::

    runner -> parent   HELLO = "JFLM" | version u16 | len(id) u16 | runner id (utf-8) | nonce_r[32]
    parent -> runner   nonce_p[32] | mode u8 | tag_p[32]
                                              tag_p = HMAC(key, "jupyter-flame/parent\0" | T)
    runner -> parent   tag_r[32]                  tag_r = HMAC(key, "jupyter-flame/runner\0" | T)

``T`` (the transcript) is HELLO | nonce_p | mode; HMAC is HMAC-SHA256 and tags are compared in
constant time. ``mode`` is the parent's choice: 1 = encrypt every frame (AEAD), 0 = MAC only;
it is inside both tags, so it cannot be downgraded on the way. Both sides then derive keys per
direction ``dir`` (``p2r`` or ``r2p``), never using the pool key itself on frames: ``prk =
HMAC(key, "jupyter-flame/session\0" | T)``, ``k_small = HMAC(prk, dir | "/small")``, ``k_otk =
HMAC(prk, dir | "/otk")``, and with encryption ``k_aead = HMAC(prk, dir | "/aead")``; frame
``seq`` of a large frame gets two one-time Poly1305 keys ``hk | fk = HMAC-SHA512(k_otk, seq u64)``
(derived in batches of 64).

Frames (one message each; integers little endian)::

    fixed = seq u64 | payload length u64 | number of buffers u32

    small frame (no buffers, payload <= 64 KiB):
        MAC only:  fixed | payload | BLAKE2b-128(key=k_small, fixed | payload)
        AEAD:      fixed | AES-256-GCM(k_aead, nonce=seq, aad=fixed, payload) | GCM tag
    large frame (otherwise):
        fixed | table (buffer length u64 each) | htag = Poly1305(hk, fixed | table)
        | body = payload | buffer 0 | buffer 1 ...
        | MAC only: Poly1305(fk, everything before)
          AEAD:     body encrypted with AES-256-GCM(k_aead, nonce=seq, aad=fixed | table | htag),
                    then its GCM tag

Frames have the same size in both modes (see :mod:`._seal` for the body's sealing).

``seq`` counts frames per direction from 0 and must be the next one. A large frame's header is
verified before anything is allocated for it (and its size checked against ``max_frame``); every
frame is verified in full before it is unpickled. Small frames use keyed BLAKE2b because on our
VMs a warm-after-idle call pays ~60 us for each cold trip into OpenSSL's EVP layer (Poly1305,
HMAC) but ~15 us for BLAKE2b; large frames use Poly1305 (~12 GB/s, vs ~1 GB/s for BLAKE2b).
A frame claiming to be the other kind fails the other kind's MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.poly1305 import Poly1305

from jupyter_flame.channel import _shm
from jupyter_flame.channel._conn import BlockingReads, Conn
from jupyter_flame.channel._seal import (
    GCM_MAX,
    AeadCheck,
    AeadSeal,
    BodySeal,
    MacCheck,
    MacSeal,
    SmallAead,
)
from jupyter_flame.errors import ChannelAuthError, ChannelClosedError

MAGIC = b"JFLM"
VERSION = 2  # 2: the parent's mode byte (encryption) in the handshake
NONCE_SIZE = 32
TAG_SIZE = 32
HEADER_TAG_SIZE = 16
SMALL_TAG_SIZE = 16
SMALL = 64 * 1024  # frames without buffers whose payload is at most this are "small"
FRAME_TAG_SIZE = 16
MAX_BUFFERS = 1 << 16
MAX_RUNNER_ID = 255
MIN_KEY_SIZE = 16

HELLO = struct.Struct("<4sHH")
FIXED = struct.Struct("<QQI")
_SEQ = struct.Struct("<Q")


def mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def parent_tag(key: bytes, transcript: bytes) -> bytes:
    return mac(key, b"jupyter-flame/parent\0" + transcript)


def runner_tag(key: bytes, transcript: bytes) -> bytes:
    return mac(key, b"jupyter-flame/runner\0" + transcript)


@dataclass(frozen=True)
class DirectionKeys:
    """The keys of one direction of one connection (``aead`` only when encrypting)."""

    small: bytes
    otk: bytes
    aead: bytes | None = None


def session_keys(key: bytes, transcript: bytes, encrypt: bool = False
                 ) -> tuple[DirectionKeys, DirectionKeys]:
    """Derive ``(parent->runner, runner->parent)`` keys from the pool key and the transcript."""
    prk = mac(key, b"jupyter-flame/session\0" + transcript)

    def keys(d: bytes) -> DirectionKeys:
        return DirectionKeys(mac(prk, d + b"/small"), mac(prk, d + b"/otk"),
                             mac(prk, d + b"/aead") if encrypt else None)

    return keys(b"p2r"), keys(b"r2p")


class _OneTimeKeys:
    """``(hk, fk)`` for each sequence number, derived 64 at a time (fewer cold code paths)."""

    BATCH = 64

    def __init__(self, keys: DirectionKeys) -> None:
        self._key = keys.otk
        self._base = 0
        self._batch: list[tuple[bytes, bytes]] = []

    def get(self, seq: int) -> tuple[bytes, bytes]:
        i = seq - self._base
        if not 0 <= i < len(self._batch):
            key = self._key
            self._base, i = seq, 0
            self._batch = [
                (d[:32], d[32:])
                for d in (
                    hmac.digest(key, _SEQ.pack(s), "sha512") for s in range(seq, seq + self.BATCH)
                )
            ]
        return self._batch[i]


def check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_SIZE:
        from jupyter_flame.errors import ConfigError

        raise ConfigError(
            f"channel key must be at least {MIN_KEY_SIZE} random bytes (32 recommended), "
            f"got {type(key).__name__} of length {len(key) if hasattr(key, '__len__') else '?'}; "
            "generate one with os.urandom(32)"
        )
    return bytes(key)


class FrameSealer:
    """Numbers, and authenticates (or encrypts), the frames of one direction (sending side)."""

    def __init__(self, keys: DirectionKeys) -> None:
        self._keys = _OneTimeKeys(keys)
        self._small = keys.small
        self._aead = keys.aead
        self._small_aead = SmallAead(keys.aead) if keys.aead else None
        self.seq = 0

    @property
    def encrypts(self) -> bool:
        return self._aead is not None

    def small(self, payload: bytes) -> bytes:
        """The whole frame for a payload of at most ``SMALL`` bytes and no buffers."""
        seq = self.seq
        self.seq += 1
        fixed = FIXED.pack(seq, len(payload), 0)
        if self._small_aead is not None:
            return fixed + self._small_aead.seal(seq, fixed, payload)
        data = fixed + payload
        return data + hashlib.blake2b(data, key=self._small, digest_size=SMALL_TAG_SIZE).digest()

    def header(self, payload_len: int, lengths: list[int]) -> tuple[bytes, BodySeal]:
        """Return ``fixed | table | htag`` and the sealer of the frame's body.

        ``lengths`` are the table's entries: a buffer's length, or a shared-memory segment's
        entry (:func:`jupyter_flame.channel._shm.entry`; its bytes are not in the body)."""
        inband = sum(n for n in lengths if not n & _shm.FLAG)
        if self._aead is not None and payload_len + inband > GCM_MAX:
            raise ValueError(f"a frame of {payload_len + inband} bytes is over the "
                             f"{GCM_MAX}-byte limit of one encrypted frame")
        seq = self.seq
        self.seq += 1
        hk, fk = self._keys.get(seq)
        head = FIXED.pack(seq, payload_len, len(lengths))
        if lengths:
            head += struct.pack(f"<{len(lengths)}Q", *lengths)
        head += Poly1305.generate_tag(hk, head)
        if self._aead is not None:
            return head, AeadSeal(self._aead, seq, head)
        return head, MacSeal(fk, head)


class FrameOpener:
    """Checks the frames of one direction (receiving side)."""

    def __init__(self, keys: DirectionKeys, max_frame: int) -> None:
        self._keys = _OneTimeKeys(keys)
        self._small = keys.small
        self._aead = keys.aead
        self._small_aead = SmallAead(keys.aead) if keys.aead else None
        self.max_frame = max_frame
        self.seq = 0
        self.mid_frame = False
        self.maps: _shm.SegmentMaps | None = None  # set on a shared-memory channel

    def open_small(self, fixed: bytes, body: memoryview) -> bytes:
        """Verify a small frame (``body`` = payload | tag); return the payload."""
        if self._small_aead is not None:
            payload = self._small_aead.open(self.seq, fixed, body)
            self.seq += 1
            return payload
        payload = bytes(body[:-SMALL_TAG_SIZE])
        h = hashlib.blake2b(fixed, key=self._small, digest_size=SMALL_TAG_SIZE)
        h.update(payload)
        if not hmac.compare_digest(h.digest(), body[-SMALL_TAG_SIZE:]):
            raise ChannelAuthError("frame failed its MAC check (wrong key or tampering)")
        self.seq += 1
        return payload

    def check_fixed(self, fixed: bytes) -> tuple[int, int]:
        """Bound the header's size before reading the rest (nothing is trusted yet)."""
        seq, payload_len, nbuf = FIXED.unpack(fixed)
        if seq != self.seq:
            raise ChannelAuthError(
                f"frame out of sequence: got {seq}, expected {self.seq} "
                "(replayed, reordered or forged frame)"
            )
        if nbuf > MAX_BUFFERS:
            raise ChannelAuthError(f"frame declares {nbuf} buffers (limit {MAX_BUFFERS})")
        if payload_len > self.max_frame:
            raise ChannelAuthError(f"frame payload of {payload_len} bytes exceeds max_frame")
        return payload_len, nbuf

    def open_header(self, head: bytes, tag: bytes | memoryview
                    ) -> tuple[int, list[int], MacCheck | AeadCheck]:
        """Verify the header's MAC and size; return payload length, buffer lengths and the
        checker of the frame's body."""
        seq = self.seq
        hk, fk = self._keys.get(seq)
        try:
            Poly1305.verify_tag(hk, head, bytes(tag))
        except InvalidSignature:
            raise ChannelAuthError(
                "frame header failed its MAC check (wrong key or tampering)"
            ) from None
        _, payload_len, nbuf = FIXED.unpack_from(head)
        lengths = list(struct.unpack_from(f"<{nbuf}Q", head, FIXED.size)) if nbuf else []
        total = payload_len + sum(_shm.length_of(n) for n in lengths)
        if self._aead is not None and any(n & _shm.FLAG for n in lengths):
            raise ChannelAuthError("an encrypted frame declares a shared-memory segment")
        if total > self.max_frame or (self._aead is not None and total > GCM_MAX):
            raise ChannelAuthError(
                f"frame of {total} bytes exceeds max_frame={self.max_frame}; "
                "raise max_frame on both ends to send larger values"
            )
        self.seq += 1
        whole = head + bytes(tag)
        check = (AeadCheck(self._aead, seq, whole) if self._aead is not None
                 else MacCheck(fk, whole))
        return payload_len, lengths, check

    async def read(self, conn: Conn | BlockingReads
                   ) -> tuple[bytes | bytearray | memoryview, list[pickle.PickleBuffer], int]:
        """Read and verify one frame; return its payload, its buffers and its size on the wire.

        Buffers are fresh numpy memory (writable), or mappings of the peer's shared-memory
        segments (:mod:`._shm`; checked before anything is returned). ``mid_frame`` tells
        whether a failure left part of a frame consumed (the stream is then unusable).
        """
        self.mid_frame = False
        fixed = bytes(await conn.read(FIXED.size))
        self.mid_frame = True
        payload_len, nbuf = self.check_fixed(fixed)
        if not nbuf and payload_len <= SMALL:  # the common small frame
            body = await conn.read(payload_len + SMALL_TAG_SIZE)
            small = self.open_small(fixed, body)
            self.mid_frame = False
            return small, [], len(fixed) + len(body)
        rest_len = 8 * nbuf + HEADER_TAG_SIZE
        if rest_len <= 4096:
            rest = bytes(await conn.read(rest_len))
        else:
            table = bytearray(rest_len)
            await conn.readinto(memoryview(table))
            rest = bytes(table)
        head = fixed + rest[:-HEADER_TAG_SIZE]
        payload_len, lengths, check = self.open_header(head, rest[-HEADER_TAG_SIZE:])
        payload: bytes | bytearray | memoryview
        if payload_len <= SMALL:
            payload = bytearray(await conn.read(payload_len))
            check.update(memoryview(payload))
        else:
            payload = _empty(payload_len)
            await conn.readinto(payload, check)
        entries = [_shm.unpack(n) for n in lengths]
        fds = [conn.conn.take_fd() if isinstance(conn, BlockingReads) else conn.take_fd()
               for shared, _, _ in entries if shared]
        try:
            arrays: list[Any] = [
                None if shared else _empty(n) for shared, _, n in entries]
            inband = 0
            for arr in arrays:
                if arr is not None:
                    await conn.readinto(arr, check)  # type: ignore[arg-type]
                    inband += len(arr)
            check.verify(bytes(await conn.read(FRAME_TAG_SIZE)))
            if fds:
                if self.maps is None:
                    raise ChannelAuthError("frame declares a shared-memory segment on a channel "
                                           "that has none")
                k = 0
                for i, (shared, seg_id, n) in enumerate(entries):
                    if shared:
                        fd, fds[k] = fds[k], -1  # handed over: open() closes it
                        k += 1
                        arrays[i] = self.maps.open(fd, seg_id, n)
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
        self.mid_frame = False
        nbytes = len(fixed) + len(rest) + payload_len + inband + FRAME_TAG_SIZE
        return payload, [pickle.PickleBuffer(a) for a in arrays if a is not None], nbytes  # type: ignore[arg-type]


def _empty(n: int) -> memoryview:
    """``n`` bytes of fresh, unzeroed memory (numpy's allocator: no page is touched before the
    socket writes it). numpy is imported on the first large frame, not with the channel: a
    runner forked from the template (which must not import numpy: OpenBLAS starts threads)
    reaches its first result without paying for it."""
    from numpy import empty, uint8

    return empty(n, uint8).data


# --- handshake (plain bytes) -----------------------------------------------------------------
async def runner_handshake(conn: Conn, key: bytes, rid: bytes, where: str
                           ) -> tuple[bytes, bool]:
    """Runner side: prove the parent holds ``key``, then prove we do; return the transcript
    and whether the parent asked for encryption."""
    hello = HELLO.pack(MAGIC, VERSION, len(rid)) + rid + os.urandom(NONCE_SIZE)
    await conn.sendall(hello)
    try:
        reply = bytes(await conn.read(NONCE_SIZE + 1 + TAG_SIZE))
    except ChannelClosedError as exc:
        raise ChannelAuthError(
            f"the parent at {where} closed the connection during the handshake: it does not "
            f"expect runner {rid.decode()!r} (or speaks another protocol version)",
            runner=rid.decode(),
        ) from exc
    transcript = hello + reply[: NONCE_SIZE + 1]
    if not hmac.compare_digest(parent_tag(key, transcript), reply[NONCE_SIZE + 1 :]):
        raise ChannelAuthError(
            f"the parent at {where} failed the handshake: it does not hold this pool's key "
            "(wrong key, or not our parent)",
            runner=rid.decode(),
        )
    mode = reply[NONCE_SIZE]
    if mode not in (0, 1):
        raise ChannelAuthError(f"the parent at {where} asked for unknown channel mode {mode}",
                               runner=rid.decode())
    await conn.sendall(runner_tag(key, transcript))
    return transcript, mode == 1


async def parent_handshake(
    conn: Conn, key: bytes, expected: Callable[[str], bool], rid_box: list[str],
    encrypt: bool = False,
) -> bytes:
    """Parent side: read the hello, refuse unexpected ids, tell the runner whether frames are
    encrypted, verify the runner; return the transcript.

    The runner id is stored in ``rid_box[0]`` as soon as it is known (for error reports).
    """
    magic, version, idlen = HELLO.unpack(await conn.read(HELLO.size))
    if magic != MAGIC or version != VERSION:
        raise ChannelAuthError(f"not a jupyter-flame runner (magic {magic!r}, version {version})")
    if not 0 < idlen <= MAX_RUNNER_ID:
        raise ChannelAuthError(f"bad runner id length {idlen}")
    rid_bytes = bytes(await conn.read(idlen))
    rid_box[0] = rid_bytes.decode("utf-8")
    if not expected(rid_box[0]):
        raise ChannelAuthError("runner id not expected")
    nonce_r = bytes(await conn.read(NONCE_SIZE))
    nonce_p = os.urandom(NONCE_SIZE)
    mode = b"\x01" if encrypt else b"\x00"
    transcript = HELLO.pack(magic, version, idlen) + rid_bytes + nonce_r + nonce_p + mode
    await conn.sendall(nonce_p + mode + parent_tag(key, transcript))
    tag_r = bytes(await conn.read(TAG_SIZE))
    if not hmac.compare_digest(runner_tag(key, transcript), tag_r):
        raise ChannelAuthError("runner failed the handshake (wrong key)")
    return transcript
