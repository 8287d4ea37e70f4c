#!/usr/bin/python3
"""Converts a MedicalNet checkpoint (.pth) to safetensors, the med3d checkpoint format.

    /usr/bin/python3 tools/convert_medicalnet.py resnet_10_23dataset.pth resnet_10_23dataset.safetensors

MedicalNet's released files (resnet_{10,18,34,50,101,152,200}.pth and the *_23dataset.pth
ones) hold {'state_dict': {...}} saved from nn.DataParallel, so every key starts with
"module."; the prefix is stripped here (med3d's loader strips it too). A .pth holding the
state dict itself is accepted as well. Values, shapes and dtypes are written unchanged
(float32 weights stay F32, int64 num_batches_tracked stays I64), in the file's key order.

Needs PyTorch (Debian: apt-get install python3-torch) and numpy. The safetensors writer is
tests/golden/safetensors_py.py (imported by path: one implementation of the format for the
fixtures and this tool, checked against the C++ reader by the test suite).
"""
import argparse
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "golden"))
import safetensors_py  # noqa: E402


def extract_state_dict(checkpoint):
    """The state dict of a MedicalNet checkpoint, keys without the 'module.' prefix."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise SystemExit("convert_medicalnet: expected {'state_dict': {name: tensor}} or {name: tensor}, "
                         f"got {type(checkpoint).__name__}")
    out = {}
    for key, value in state.items():
        if not torch.is_tensor(value):
            raise SystemExit(f"convert_medicalnet: entry '{key}' is a {type(value).__name__}, not a tensor")
        name = key[len("module."):] if key.startswith("module.") else key
        if name in out:
            raise SystemExit(f"convert_medicalnet: key '{name}' appears twice once 'module.' is stripped")
        out[name] = value.detach().cpu().contiguous().numpy()
    return out


def convert(source, target):
    checkpoint = torch.load(str(source), map_location="cpu")
    arrays = extract_state_dict(checkpoint)
    safetensors_py.save(str(target), arrays,
                        {"source": pathlib.Path(source).name, "converter": "tools/convert_medicalnet.py"})
    return arrays


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="MedicalNet .pth file")
    parser.add_argument("target", help="output .safetensors file")
    args = parser.parse_args()
    arrays = convert(args.source, args.target)
    print(f"convert_medicalnet: wrote {len(arrays)} tensors to {args.target}")


if __name__ == "__main__":
    main()
