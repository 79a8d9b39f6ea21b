"""Shipping values: real sender and receiver processes, out-of-band buffers, digests, errors."""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import jupyter_flame
from jupyter_flame.channel.protocol import Packed
from jupyter_flame.errors import SerializationError
from jupyter_flame.values.shipping import (
    LargeTransferWarning,
    digest,
    human_bytes,
    pack,
    pack_namespace,
    ships_by_value,
    type_name,
    unpack,
    warn_size,
)

HELPERS = """
import math

FACTOR = 2

def scale(x):
    return x * FACTOR

class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm2(self):
        return math.hypot(self.x, self.y) ** 2
"""

SUBMODULE = """
from helpers import scale

def triple(x):
    return scale(x) + x
"""

SENDER = """
import json
import pickle
import sys

import numpy as np

import helpers as h
from helpers import Point, scale
from localpkg.sub import triple
from jupyter_flame.values.shipping import pack_namespace, ships_by_value

OFFSET = 10

def add_offset(x):
    return x + OFFSET + h.scale(1)

class Acc:
    def __init__(self):
        self.items = []

    def add(self, value):
        self.items.append(triple(value))
        return self

def make_closure(k):
    def inner(x):
        return scale(x) * k
    return inner

square = lambda x: x * x
times3 = make_closure(3)
pt = Point(3, 4)
bundle = {"fns": [scale, square], "mod": h, "nested": (times3,)}
arr = np.arange(100_000, dtype=np.float64).reshape(1000, 100)
fortran = np.asfortranarray(arr[:, :10])
acc = Acc()

names = ["h", "scale", "Point", "pt", "triple", "add_offset", "Acc", "acc", "square",
         "times3", "bundle", "arr", "fortran", "json", "np"]
packed = pack_namespace(globals(), names)
frames = {
    name: (p.payload, [bytes(b.raw()) for b in p.buffers], p.digest, p.type_name)
    for name, p in packed.items()
}
with open(sys.argv[1], "wb") as fh:
    pickle.dump(frames, fh, protocol=5)
print(json.dumps({
    "by_value": {m: ships_by_value(m) for m in ["helpers", "localpkg", "json", "numpy",
                                                 "jupyter_flame"]},
    "arr_payload": len(packed["arr"].payload),
    "arr_buffers": len(packed["arr"].buffers),
    "json_payload": len(packed["json"].payload),
}))
"""

RECEIVER = """
import json
import pickle
import sys
from types import SimpleNamespace

import numpy as np

from jupyter_flame.values.shipping import digest, unpack

try:
    import helpers  # noqa: F401
    sys.exit("helpers must not be importable here")
except ImportError:
    pass

with open(sys.argv[1], "rb") as fh:
    frames = pickle.load(fh)
ns = {}
for i, (name, (payload, buffers, sent_digest, type_name)) in enumerate(sorted(frames.items())):
    # buffers as a channel may hand them over: bytes, memoryview, bytearray or numpy arrays
    kinds = [bytes, memoryview, bytearray, lambda b: np.frombuffer(b, dtype=np.uint8)]
    buffers = [kinds[(i + j) % 4](b) for j, b in enumerate(buffers)]
    assert digest(payload, buffers) == sent_digest, name
    ns[name] = unpack(SimpleNamespace(payload=payload, buffers=buffers, type_name=type_name))

expected = np.arange(100_000, dtype=np.float64).reshape(1000, 100)
print(json.dumps({
    "h": ns["h"].scale(5),
    "module_name": ns["h"].__name__,
    "scale": ns["scale"](7),
    "Point": ns["Point"](6, 8).norm2(),
    "pt": ns["pt"].norm2(),
    "triple": ns["triple"](2),
    "add_offset": ns["add_offset"](1),
    "acc": ns["acc"].add(1).add(2).items,
    "Acc": ns["Acc"]().add(4).items,
    "square": ns["square"](9),
    "times3": ns["times3"](2),
    "bundle": [f(3) for f in ns["bundle"]["fns"]] + [ns["bundle"]["mod"].FACTOR,
                                                      ns["bundle"]["nested"][0](1)],
    "arr": bool(np.array_equal(ns["arr"], expected)),
    "fortran": bool(np.array_equal(ns["fortran"], expected[:, :10])),
    "fortran_order": bool(ns["fortran"].flags.f_contiguous),
    "json_is_real_module": ns["json"] is sys.modules["json"],
    "np_is_real_module": ns["np"] is np,
}))
"""


def _run(script: Path, cwd: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, script.name, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    notebook = tmp_path_factory.mktemp("notebook")
    (notebook / "helpers.py").write_text(HELPERS)
    (notebook / "localpkg").mkdir()
    (notebook / "localpkg" / "__init__.py").write_text("")
    (notebook / "localpkg" / "sub.py").write_text(SUBMODULE)
    (notebook / "sender.py").write_text(SENDER)
    elsewhere = tmp_path_factory.mktemp("runner")
    (elsewhere / "receiver.py").write_text(RECEIVER)
    frames = elsewhere / "frames.bin"
    sent = _run(notebook / "sender.py", notebook, str(frames))
    received = _run(elsewhere / "receiver.py", elsewhere, str(frames))
    return sent, received


def test_local_modules_go_by_value_installed_by_reference(
    round_trip: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    sent, _ = round_trip
    assert sent["by_value"] == {
        "helpers": True,
        "localpkg": True,
        "json": False,
        "numpy": False,
        "jupyter_flame": False,
    }
    assert sent["json_payload"] < 100  # a reference: the module's name, not its contents


def test_receiver_without_helpers_runs_everything(
    round_trip: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    _, got = round_trip
    assert got == {
        "h": 10,
        "module_name": "helpers",
        "scale": 14,
        "Point": pytest.approx(100.0),
        "pt": pytest.approx(25.0),
        "triple": 6,
        "add_offset": 13,
        "acc": [3, 6],
        "Acc": [12],
        "square": 81,
        "times3": 12,
        "bundle": [6, 9, 2, 6],
        "arr": True,
        "fortran": True,
        "fortran_order": True,
        "json_is_real_module": True,
        "np_is_real_module": True,
    }


def test_sender_keeps_array_buffers_out_of_band(
    round_trip: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    sent, _ = round_trip
    assert sent["arr_buffers"] == 1
    assert sent["arr_payload"] < 1024


# -- in-process: buffers and digests ------------------------------------------------------------


def test_large_array_travels_out_of_band_without_copies() -> None:
    arr = np.ones(100 * 1024 * 1024 // 8, dtype=np.float64)  # 100 MiB
    packed = pack(arr, name="arr")
    assert len(packed.payload) < 1024
    assert len(packed.buffers) == 1
    assert np.shares_memory(np.frombuffer(packed.buffers[0].raw(), dtype=np.float64), arr)
    assert packed.nbytes == len(packed.payload) + arr.nbytes
    assert packed.type_name == "numpy.ndarray"
    back = unpack(packed)
    assert back.dtype == arr.dtype and np.array_equal(back, arr)


def test_digest_is_stable_and_sees_in_place_changes() -> None:
    arr = np.arange(1_000_000, dtype=np.int64)
    first, second = pack(arr), pack(arr)
    assert first.digest == second.digest
    assert first.digest == digest(first.payload, [bytes(b.raw()) for b in first.buffers])
    assert first.digest == digest(first.payload, [np.asarray(b) for b in first.buffers])
    arr[12345] = -1
    assert pack(arr).digest != first.digest


def test_digest_depends_on_buffer_boundaries() -> None:
    assert digest(b"p", [b"ab", b"c"]) != digest(b"p", [b"a", b"bc"])
    assert digest(b"p", [b"abc"]) == digest(b"p", [memoryview(b"abc")])


def test_unpack_accepts_received_buffer_kinds() -> None:
    packed = pack({"a": np.arange(10.0), "b": [np.eye(3)]})
    raw = [bytearray(b.raw()) for b in packed.buffers]
    back = unpack(SimpleNamespace(payload=packed.payload, buffers=raw))
    assert np.array_equal(back["a"], np.arange(10.0)) and np.array_equal(back["b"][0], np.eye(3))


# -- errors -------------------------------------------------------------------------------------


def _generator() -> Iterator[int]:
    yield 1


@pytest.fixture
def unpicklables(tmp_path: Path) -> Iterator[dict[str, object]]:
    fh = open(tmp_path / "f.txt", "w")  # noqa: SIM115
    sock = socket.socket()
    try:
        yield {"fh": fh, "lock": threading.Lock(), "gen": _generator(), "sock": sock}
    finally:
        fh.close()
        sock.close()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("fh", "io.TextIOWrapper"),
        ("lock", "_thread.lock"),
        ("gen", "generator"),
        ("sock", "socket.socket"),
    ],
)
def test_unpicklable_variable_names_variable_type_and_fix(
    unpicklables: dict[str, object], name: str, kind: str
) -> None:
    ns = {"ok": [1, 2, 3], **unpicklables}
    with pytest.raises(SerializationError) as info:
        pack_namespace(ns, ["ok", name])
    assert list(pack_namespace(ns, ["ok"])) == ["ok"]  # only that variable is the problem
    err = info.value
    assert err.name == name and err.type_name == kind
    assert str(err).startswith(f"Cannot send variable {name!r} ({kind}) to the runner: ")
    assert str(err).endswith(
        f"Create it inside the cell, or pass --skip {name} to leave it behind."
    )
    assert "pickle" in str(err) or "cannot travel" in str(err)


def test_error_message_for_file_matches_the_documented_text(
    unpicklables: dict[str, object],
) -> None:
    with pytest.raises(SerializationError) as info:
        pack(unpicklables["fh"], name="fh")
    assert str(info.value) == (
        "Cannot send variable 'fh' (io.TextIOWrapper) to the runner: an open file or stream "
        "(io.TextIOWrapper) cannot travel; open it inside the cell instead. Create it inside "
        "the cell, or pass --skip fh to leave it behind."
    )


@pytest.mark.parametrize(("mode", "kind"), [
    ("r", "io.TextIOWrapper"), ("rb", "io.BufferedReader"), ("r+b", "io.BufferedRandom"),
    ("ab", "io.BufferedWriter"), ("rb0", "io.FileIO")])
def test_open_files_never_travel_in_any_mode(tmp_path: Path, mode: str, kind: str) -> None:
    """cloudpickle would read a read-mode file whole and send an io.StringIO copy, which would
    then come back and replace the notebook's file object: refused instead, even nested."""
    path = tmp_path / "data.txt"
    path.write_text("line 1\nline 2\n")
    fh = open(path, mode.rstrip("0"), buffering=0) if mode.endswith("0") else open(path, mode)  # noqa: SIM115
    start = fh.tell()
    try:
        for value, name in ((fh, "fh"), ({"inputs": [fh]}, "config")):
            with pytest.raises(SerializationError) as info:
                pack(value, name=name)
            assert f"({kind}) cannot travel" in str(info.value)
        assert fh.tell() == start  # nothing was read from it
    finally:
        fh.close()


def test_in_memory_streams_still_travel() -> None:
    buf = io.BytesIO(b"abc")
    buf.seek(1)
    text = io.StringIO("xyz")
    back = unpack(pack({"b": buf, "t": text}))
    assert back["b"].getvalue() == b"abc" and back["b"].tell() == 1
    assert back["t"].getvalue() == "xyz"


def test_error_for_argument_and_nested_location() -> None:
    with pytest.raises(SerializationError) as info:
        pack(threading.Lock())
    assert str(info.value) == (
        "Cannot send argument of type _thread.lock: cannot pickle '_thread.lock' object."
    )
    cfg = {"rate": 0.1, "inner": {"items": [1, threading.Lock()]}}
    with pytest.raises(SerializationError, match=r"\(inside key 'inner', key 'items', item 1\)"):
        pack(cfg, name="cfg")
    obj = SimpleNamespace(lock=threading.RLock())
    with pytest.raises(SerializationError, match=r"\(inside attribute 'lock'\)"):
        pack(obj, name="obj")
    lock = threading.Lock()
    with pytest.raises(SerializationError, match=r"\(inside closure variable 'lock'\)"):
        pack(lambda: lock, name="fn")


def test_unpack_failure_is_a_serialization_error(tmp_path: Path) -> None:
    (tmp_path / "vanishing_mod.py").write_text("class Thing:\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("vanishing_mod")
        payload = pickle.dumps(module.Thing(), protocol=5)  # plain pickle: by reference
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vanishing_mod", None)
    packed = Packed(payload=payload, type_name="vanishing_mod.Thing")
    with pytest.raises(SerializationError, match="No module named 'vanishing_mod'") as info:
        unpack(packed, name="thing")
    assert info.value.name == "thing"


# -- modules, sizes, names ----------------------------------------------------------------------


def test_ships_by_value_classification(tmp_path: Path) -> None:
    assert not ships_by_value(json) and not ships_by_value(np) and not ships_by_value(sys)
    assert not ships_by_value(jupyter_flame)  # editable install: a .pth file adds its root
    assert not ships_by_value("jupyter_flame.values.shipping")
    (tmp_path / "nb_local_helper.py").write_text("VALUE = 41\n")
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("nb_local_helper")
        assert ships_by_value(module)
        packed = pack(module, name="m")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("nb_local_helper", None)
    assert b"VALUE" in packed.payload  # by value: its namespace is in the stream
    assert unpack(packed).VALUE == 41


def test_local_module_with_unpicklable_state(tmp_path: Path) -> None:
    (tmp_path / "nb_locked_helper.py").write_text(
        "import threading\nLOCK = threading.Lock()\ndef f():\n    return 1\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("nb_locked_helper")
        assert unpack(pack(module.f))() == 1  # a function takes only the globals it uses
        with pytest.raises(SerializationError, match=r"inside module attribute 'LOCK'"):
            pack(module, name="helpers")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("nb_locked_helper", None)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (100 * 1024**2, "100.0 MiB"),
        (int(1.9 * 1024**3), "1.9 GiB"),
        (3 * 1024**4, "3.0 TiB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_warn_size() -> None:
    with pytest.warns(LargeTransferWarning, match=r"^Sending 'big' \(numpy.ndarray, 1.9 GiB\)"):
        warn_size("big", int(1.9 * 1024**3), 1024**3, type_name="numpy.ndarray")
    assert issubclass(LargeTransferWarning, UserWarning)
    with pytest.warns(LargeTransferWarning, match=r"^Sending a value \(2.0 KiB\) to the runner\.$"):
        warn_size(None, 2048, 1024)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_size("small", 10, 1024)
        warn_size("any", 10**12, None)


def test_type_name() -> None:
    assert type_name(1) == "int"
    assert type_name(np.zeros(1)) == "numpy.ndarray"
    assert type_name(threading.Lock()) == "_thread.lock"


def test_pack_namespace_dedupes_and_keeps_order() -> None:
    ns = {"a": 1, "b": "two"}
    packed = pack_namespace(ns, ["b", "a", "b"])
    assert list(packed) == ["b", "a"]
    assert unpack(packed["b"]) == "two"
    with pytest.raises(KeyError):
        pack_namespace(ns, ["missing"])


def test_no_thread_takes_the_fast_path_before_a_scan_has_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one thread scans ``sys.modules``, another must not skip the scan and pickle a
    local module by reference: it waits for the scan (and its registrations) to finish."""
    import types

    import cloudpickle

    from jupyter_flame.values import _local_modules as lm

    name = "flame_scan_race_local"
    module = types.ModuleType(name)
    module.__file__ = str(tmp_path / f"{name}.py")  # beside the notebook: local
    lm.LocalModules().register()  # warm up: whatever a full scan imports lazily is imported now
    monkeypatch.setitem(sys.modules, name, module)
    entered, release = threading.Event(), threading.Event()

    def slow_is_local(top: str, location: str | None) -> bool:
        if top == name:  # hold the first scan right before it registers our module
            entered.set()
            release.wait(5)
        return lm._is_local(top, location)

    scan = lm.LocalModules(is_local=slow_is_local)
    seen: list[bool] = []

    def second() -> None:
        scan.register()
        seen.append(name in scan.registered)  # what a pickle right after would rely on

    first = threading.Thread(target=scan.register)
    first.start()
    try:
        assert entered.wait(5)
        other = threading.Thread(target=second)
        other.start()
        other.join(0.3)
        assert not seen  # still waiting for the first scan (the bug: returned at once, False)
    finally:
        release.set()
        first.join(5)
    other.join(5)
    try:
        assert seen == [True]
    finally:
        cloudpickle.unregister_pickle_by_value(module)
