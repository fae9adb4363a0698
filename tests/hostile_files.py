"""Builders of hostile and broken model files for tests/test_catalogue.py.

EVIL_MODULE is "user code": classes and functions registered with
keras.saving.register_keras_serializable, each of which writes to the file
named by $K2M_MARKER if it ever runs, and `shadow()`, which also registers
two of them under plain built-in names (GlorotUniform, relu) through
get_custom_objects().  The catalogue imports it in the test process and,
through a sitecustomize (which also shadows), in every export-model it
starts, so Keras *could* reach it: only the exporter's checks stop it.
"""
from __future__ import annotations

import json
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

EVIL_MODULE = '''
"""A user's custom objects: any code of theirs that runs writes the marker."""
import os
import keras


def _ran(what):
    marker = os.environ.get("K2M_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(what + "\\n")


@keras.saving.register_keras_serializable(package="evil")
class Doubler(keras.layers.Layer):
    def __init__(self, **kw):
        _ran("init")
        super().__init__(**kw)

    def build(self, input_shape):
        _ran("build")

    def call(self, x):
        _ran("call")
        return x * 2.0


@keras.saving.register_keras_serializable(package="evil")
class Dense(keras.layers.Dense):
    """A custom layer wearing a built-in's class name."""
    def __init__(self, *a, **kw):
        _ran("init")
        super().__init__(*a, **kw)

    def call(self, x):
        _ran("call")
        return super().call(x)


@keras.saving.register_keras_serializable(package="evil")
class EvilInit(keras.initializers.Initializer):
    def __init__(self, **kw):
        _ran("initializer")

    def __call__(self, shape, dtype=None):
        _ran("initializer call")
        return keras.ops.zeros(shape, dtype=dtype)

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="evil")
class EvilReg(keras.regularizers.Regularizer):
    def __init__(self, **kw):
        _ran("regularizer")

    def __call__(self, x):
        return 0.0

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="evil")
class EvilConstraint(keras.constraints.Constraint):
    def __init__(self, **kw):
        _ran("constraint")

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="evil")
class EvilPolicy(keras.DTypePolicy):
    def __init__(self, *a, **kw):
        _ran("dtype policy")
        super().__init__(*a, **kw)


@keras.saving.register_keras_serializable(package="evil")
def evil_act(x):
    _ran("activation")
    return x


SHADOWS = {"GlorotUniform": EvilInit, "relu": evil_act}


def shadow(on=True):
    """Plain built-in names a notebook may have shadowed: Keras looks them
    up here before its own modules (a model built meanwhile gets them)."""
    for name, obj in SHADOWS.items():
        if on:
            keras.saving.get_custom_objects()[name] = obj
        else:
            keras.saving.get_custom_objects().pop(name, None)
'''


def user_lib(folder: Path) -> Path:
    """The module plus a sitecustomize that imports it at interpreter start."""
    lib = folder / "userlib"
    lib.mkdir(exist_ok=True)
    (lib / "evil_layers.py").write_text(EVIL_MODULE)
    (lib / "sitecustomize.py").write_text("import evil_layers\nevil_layers.shadow()\n")
    return lib


def zip_members(src: Path) -> dict:
    with zipfile.ZipFile(src) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_zip(dst: Path, members: dict) -> Path:
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    return dst


def edit_h5_config(src: Path, dst: Path, edit) -> Path:
    """Copy a legacy .h5 model, editing its model_config (parsed JSON)."""
    import h5py
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        edit(cfg)
        f.attrs["model_config"] = json.dumps(cfg)
    return dst


def h5_layers(cfg: dict) -> list:
    return cfg["config"]["layers"]


def deflate_bomb(dst: Path, members: dict, bomb: str, size: int) -> Path:
    """A zip of `members` (stored) plus `bomb`: `size` bytes of spaces,
    deflated.  The deflate stream is one segment repeated (each ends with a
    full flush, so identical input gives identical bytes), which builds a
    4.5 GiB member in seconds; zip64 records carry the sizes."""
    chunk = b" " * (1 << 24)
    assert size % len(chunk) == 0
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = co.compress(chunk) + co.flush(zlib.Z_FULL_FLUSH)
    repeat = co.compress(chunk) + co.flush(zlib.Z_FULL_FLUSH)
    last = co.flush()
    count = size // len(chunk)
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    entries = [(n, 0, zlib.crc32(b), len(b), len(b), [b]) for n, b in members.items()]
    compressed = len(first) + len(repeat) * (count - 1) + len(last)
    entries.append((bomb, 8, crc, compressed, size, [first] + [repeat] * (count - 1) + [last]))
    central, offset = [], 0
    with open(dst, "wb") as f:
        for name, method, crc32, csize, usize, parts in entries:
            raw = name.encode()
            extra = struct.pack("<HHQQ", 1, 16, usize, csize)
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0x21, crc32,
                                0xFFFFFFFF, 0xFFFFFFFF, len(raw), len(extra)) + raw + extra)
            for part in parts:
                f.write(part)
            cextra = struct.pack("<HHQQQ", 1, 24, usize, csize, offset)
            central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0,
                                       0x21, crc32, 0xFFFFFFFF, 0xFFFFFFFF, len(raw),
                                       len(cextra), 0, 0, 0, 0, 0xFFFFFFFF) + raw + cextra)
            offset = f.tell()
        cd_start = f.tell()
        for c in central:
            f.write(c)
        cd_size = f.tell() - cd_start
        eocd64 = f.tell()
        n = len(entries)
        f.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, cd_size, cd_start))
        f.write(struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1))
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                            0xFFFFFFFF, 0))
    return dst


def npz_member_offset(path: Path, member: str) -> tuple:
    """(offset, size) of a stored .npz member's bytes in the file."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    raw = path.read_bytes()
    h = info.header_offset
    name_len = int.from_bytes(raw[h + 26:h + 28], "little")
    extra_len = int.from_bytes(raw[h + 28:h + 30], "little")
    return h + 30 + name_len + extra_len, info.compress_size
