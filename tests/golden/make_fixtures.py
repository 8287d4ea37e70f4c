#!/usr/bin/python3
"""Writes the golden fixtures under tests/golden/ with PyTorch (Debian's python3-torch, CPU).

Run with /usr/bin/python3 tests/golden/make_fixtures.py. Each gen_*.py module beside this file
defines generate(write) and calls write(name, tensors) once per fixture, where tensors maps
names to torch tensors (inputs, parameters, outputs and gradients). CI only reads the files.
"""
import importlib
import pathlib
import sys

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import safetensors_py  # noqa: E402


def write(name, tensors):
    arrays = {k: v.detach().contiguous().numpy() for k, v in tensors.items()}
    safetensors_py.save(str(HERE / f"{name}.safetensors"), arrays,
                        {"generator": "tests/golden/make_fixtures.py", "torch": torch.__version__})


def main():
    torch.set_num_threads(1)
    only = set(sys.argv[1:])
    for path in sorted(HERE.glob("gen_*.py")):
        if only and path.stem not in only:
            continue
        torch.manual_seed(0)
        module = importlib.import_module(path.stem)
        module.generate(write)
        print(f"{path.stem}: done")


if __name__ == "__main__":
    main()
