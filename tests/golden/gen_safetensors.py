"""A safetensors fixture written by the independent Python implementation (safetensors_py.py).

python_written.safetensors holds every dtype med3d reads (F32, F64, I32, I64, U8), ranks 0 to 5,
an empty tensor, extreme and special values, a non-ASCII tensor name and metadata with
characters JSON must escape. Rank 0 is missing: safetensors_py.save passes arrays through
np.ascontiguousarray, which turns a 0-d array into shape [1]; the C++ -> Python check
(check_cpp_written.py) covers rank 0 instead. tests/unit/test_serialize.cpp rebuilds the same values and
compares them exactly. Needs only numpy: run it directly, or through make_fixtures.py.
"""
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import safetensors_py  # noqa: E402

METADATA = {
    "generator": "tests/golden/gen_safetensors.py",
    "quoted": 'say "hi" \\ then\nnew line\ttab',
    "unicode": "spacing in \u00b5m \u2013 ok",
}


def tensors():
    return {
        "f32_special": np.array([0.0, -0.0, 1.5, -2.25, np.inf, -np.inf, np.nan,
                                 np.float32(2.0 ** -149), np.finfo(np.float32).max,
                                 np.float32(1.0 / 3.0)], dtype=np.float32),
        "f64_pi": np.array([np.pi], dtype=np.float64),
        "f32_rank4": np.array([-1.0, 0.5, 0.25, 1e30], dtype=np.float32).reshape(1, 2, 1, 2),
        "f64_rank5": (np.arange(12, dtype=np.float64) / 3.0 - 1.5).reshape(2, 1, 3, 2, 1),
        "i32_matrix": np.array([[-2 ** 31, 2 ** 31 - 1, 0], [1, -1, 123456789]], dtype=np.int32),
        "i64_extremes": np.array([-2 ** 63, 2 ** 63 - 1, 2 ** 53 + 1, -5], dtype=np.int64),
        "u8_rank3": np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * np.uint8(11),
        "empty_f32": np.zeros((2, 0, 3), dtype=np.float32),
        "labels_\u00b5": np.array([255, 0, 7], dtype=np.uint8),
    }


def generate(write=None):
    """Runs under make_fixtures.py too; `write` (torch tensors) is not needed here."""
    del write
    safetensors_py.save(str(HERE / "python_written.safetensors"), tensors(), METADATA)


if __name__ == "__main__":
    generate()
