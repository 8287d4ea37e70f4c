#!/usr/bin/python3
"""Checks a safetensors file written by med3d's C++ writer (tests/interop/write_interop_file.cpp)
with the independent Python implementation: values, dtypes, shapes, tensor order, metadata, the
8-byte header padding and the layout of the data section. Needs numpy only.

Usage: /usr/bin/python3 tests/golden/check_cpp_written.py FILE.safetensors
"""
import json
import pathlib
import struct
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import safetensors_py  # noqa: E402


def expected_tensors():
    return {
        "scalar_f64": np.array(0.1, dtype=np.float64),
        "f32_rank1": np.arange(7, dtype=np.float32) * np.float32(0.25) - np.float32(3.0),
        "f64_rank5": (np.arange(24, dtype=np.float64) / 3.0).reshape(2, 1, 3, 2, 2),
        "i32_rank2": (np.arange(12, dtype=np.int64) * 1000003 - 6000000).astype(np.int32).reshape(3, 4),
        "i64_rank3": ((np.arange(8, dtype=np.int64) - 4) * (1 << 40) + np.arange(8)).reshape(2, 2, 2),
        "i64_extremes": np.array([-2 ** 63, 2 ** 63 - 1], dtype=np.int64),
        "u8_rank4": ((np.arange(16) * 37) % 256).astype(np.uint8).reshape(2, 2, 2, 2),
        "empty_i32": np.zeros((3, 0), dtype=np.int32),
        "labels_\u00b5": np.array([255, 0, 7], dtype=np.uint8),
    }


EXPECTED_METADATA = {
    "format": "med3d",
    "quoted": 'say "hi" \\ then\nnew line\ttab',
    "unicode": "spacing in \u00b5m \u2013 ok",
}


def check(path):
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0, f"header length {n} is not a multiple of 8"
    header_text = raw[8:8 + n].decode("utf-8")
    stripped = header_text.rstrip(" ")
    assert len(header_text) - len(stripped) < 8, "more than 7 bytes of padding"
    assert stripped.endswith("}"), "padding must be spaces after the JSON object"
    header = json.loads(header_text)
    names = [k for k in header if k != "__metadata__"]
    expected = expected_tensors()
    assert names == list(expected), f"tensor order {names} != {list(expected)}"

    offset = 0
    for name in names:
        begin, end = header[name]["data_offsets"]
        assert begin == offset, f"{name}: data starts at {begin}, expected {offset}"
        offset = end
    assert 8 + n + offset == len(raw), f"file has {len(raw)} bytes, header describes {8 + n + offset}"

    tensors, metadata = safetensors_py.load(path)
    assert metadata == EXPECTED_METADATA, f"metadata {metadata!r}"
    for name, want in expected.items():
        got = tensors[name]
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
        assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        assert np.array_equal(got, want), f"{name}: values differ:\n{got}\n{want}"
    print(f"{path}: {len(expected)} tensors and metadata match")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    check(sys.argv[1])
