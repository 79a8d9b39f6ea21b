"""A short seeded fuzz of the channel (the long run is benchmarks/fuzz_channel.py): fuzzed frames
are all refused, nothing of them is unpickled, memory stays bounded, a real session beside them
is unaffected. Both modes (MAC-only and encrypted), both directions."""

from __future__ import annotations

import asyncio

import pytest

from tests.channel_fuzz import KINDS, fuzz_reader, fuzz_sockets


@pytest.mark.parametrize("encrypt", [False, True], ids=["mac", "aead"])
def test_reader_refuses_every_fuzzed_frame(encrypt: bool) -> None:
    report = fuzz_reader(3000, seed=15, encrypt=encrypt)
    assert report.accepted_forgeries == 0, report
    assert report.rejected == report.frames == 3000
    assert set(report.by_kind) == set(KINDS)  # every mutation was tried
    # 2^62 and 2^64-1 lengths, 2^32 buffers: refused before anything is allocated for them
    assert report.peak_bytes < 64 * 1024**2, report.peak_bytes


@pytest.mark.parametrize("encrypt", [False, True], ids=["mac", "aead"])
def test_listener_and_runner_refuse_fuzzed_frames_on_real_sockets(encrypt: bool) -> None:
    report = asyncio.run(asyncio.wait_for(fuzz_sockets(150, seed=7, encrypt=encrypt), 120))
    assert report.accepted_forgeries == 0 and report.unpickled == 0, report
    assert report.rejected == report.frames == 150
