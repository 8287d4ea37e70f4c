"""Golden fixtures for whole networks (tests/unit/test_model_golden.cpp), against the PyTorch
definitions in medicalnet_torch.py. No weight or full gradient is stored: both sides build the
same weights from a seeded generator, and each gradient is stored as a compressed signature.

The generator (implemented identically in C++ in test_model_golden.cpp):
  u(seed, counter) = kernels::philox_uniform(seed, 0, counter): Philox4x32-10, 53-bit uniform
  in [0, 1) (kernels/include/med3d/kernels/philox.h), reimplemented bit-exactly below in numpy.
  State entry i of the state dict (floating entries in state-dict order; num_batches_tracked
  skipped) with n elements takes counters offset_i .. offset_i + n - 1 of seed 1234
  (offset_i = the element count of the entries before it) and
    value[j] = center + spread * (u(1234, offset_i + j) - 0.5)
  rank >= 2 (conv / linear weights): center 0, spread 2 sqrt(6 / fan_in), fan_in = n / shape[0]
  running_var: center 1, spread 0.5     running_mean: center 0, spread 0.2
  other rank-1 "weight" (BN): 1, 0.5     rank-1 "bias": 0, 0.2
  Values are rounded to f32 (the C++ networks are f32); PyTorch then runs in f64 on them.
  Input x[j] = 2 (u(1235, j) - 0.5), rounded to f32; stored in the fixture as well.
  Loss = sum(y * w) with w[j] = u(1236, j) - 0.5 over y's elements.
  Signature of a gradient g (n elements): [|g|_2, <g, r_0>, .., <g, r_3>] in f64 where
  r_k[j] = philox4x32_10(counter=j, key=1237).v[k] / 2^32 - 0.5 (word k of block j).
Fixture model_<net>_<mode>.safetensors: x, y (f32, PyTorch's f64 output), grad.<param> [5]
for every parameter (nograd.<param> where no gradient reached it), in named_parameters order, and in train mode state.<buffer> [5] for every running statistic after
the step (batch statistics, momentum 0.1). gen.u: u(1234, c) for a few counters c (gen.counters),
so the C++ test checks this numpy Philox against its own.
Train mode runs DenseASPP with dropout p = 0 (eval mode keeps p = 0.1, inactive).
ResNet-50-B in train mode (1x16^3) is ill-conditioned in f32 (PyTorch's own f32 gradients differ
from f64 by up to 14%), so the C++ test compares its output and running statistics loosely and
skips its gradient signatures; see test_model_golden.cpp.
Regenerate a few nets only with MED3D_GEN_ONLY=name1,name2 (names as in NETS below).
"""
import os

import numpy as np
import torch

import medicalnet_torch as mt

M32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counters, seed):
    counters = np.asarray(counters, dtype=np.uint64)
    c0 = counters & M32
    c1 = counters >> np.uint64(32)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0 = seed & 0xFFFFFFFF
    k1 = (seed >> 32) & 0xFFFFFFFF
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        n0 = (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0)
        n1 = p1 & M32
        n2 = (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1)
        n3 = p0 & M32
        c0, c1, c2, c3 = n0, n1, n2, n3
        k0 = (k0 + 0x9E3779B9) & 0xFFFFFFFF
        k1 = (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c0, c1, c2, c3


def philox_uniform(seed, counters):
    v0, v1, _, _ = philox4x32_10(counters, seed)
    bits = ((v0 << np.uint64(21)) ^ (v1 >> np.uint64(11))) & np.uint64((1 << 53) - 1)
    return bits.astype(np.float64) * (1.0 / 9007199254740992.0)


CHUNK = 1 << 22


def uniform_range(seed, start, n):
    out = np.empty(n, dtype=np.float64)
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        out[s:e] = philox_uniform(seed, np.arange(start + s, start + e, dtype=np.uint64))
    return out


def center_spread(name, shape):
    if len(shape) >= 2:
        n = int(np.prod(shape))
        return 0.0, 2.0 * np.sqrt(6.0 / (n // shape[0]))
    if name.endswith("running_var"):
        return 1.0, 0.5
    if name.endswith("running_mean"):
        return 0.0, 0.2
    if name.endswith("weight"):
        return 1.0, 0.5
    return 0.0, 0.2


_U = {"values": np.empty(0)}


def weight_uniforms(n):
    """u(1234, 0 .. n-1); every network's state starts at counter 0, so one growing prefix serves all."""
    have = _U["values"]
    if have.size < n:
        _U["values"] = np.concatenate([have, uniform_range(1234, have.size, n - have.size)])
    return _U["values"][:n]


def init_state(model):
    entries = [(k, t) for k, t in model.state_dict().items() if t.is_floating_point()]
    u = weight_uniforms(sum(t.numel() for _, t in entries))
    offset = 0
    with torch.no_grad():
        for name, t in entries:
            n = t.numel()
            center, spread = center_spread(name, tuple(t.shape))
            v = center + spread * (u[offset:offset + n] - 0.5)
            v = v.astype(np.float32).astype(np.float64)
            t.copy_(torch.from_numpy(v).reshape(t.shape))
            offset += n


_R = {"values": np.empty((4, 0))}


def projections(n):
    """r_k[j] for j < n: element j depends on j only, so smaller tensors use a prefix."""
    have = _R["values"]
    if have.shape[1] < n:
        more = np.empty((4, n - have.shape[1]))
        for s in range(have.shape[1], n, CHUNK):
            e = min(n, s + CHUNK)
            words = philox4x32_10(np.arange(s, e, dtype=np.uint64), 1237)
            for k in range(4):
                more[k, s - have.shape[1]:e - have.shape[1]] = words[k].astype(np.float64) * (1.0 / 4294967296.0) - 0.5
        _R["values"] = np.concatenate([have, more], axis=1)
    return _R["values"][:, :n]


def signature(g):
    g = g.detach().reshape(-1).numpy().astype(np.float64)
    sig = np.empty(5)
    sig[0] = np.linalg.norm(g)
    sig[1:] = projections(g.size) @ g
    return torch.from_numpy(sig)


def make_input(shape):
    n = int(np.prod(shape))
    v = (2.0 * (uniform_range(1235, 0, n) - 0.5)).astype(np.float32)
    return torch.from_numpy(v.reshape(shape))


def run(write, name, make_model, forward, input_shape, train):
    torch.manual_seed(0)
    model = make_model().double()
    init_state(model)
    model.train(train)
    x32 = make_input(input_shape)
    y = forward(model, x32.double())
    w = torch.from_numpy(uniform_range(1236, 0, y.numel()) - 0.5).reshape(y.shape)
    (y * w).sum().backward()
    out = {"x": x32, "y": y.detach().float(), "gen.counters": torch.tensor([0, 1, 7, 123456789], dtype=torch.int64)}
    out["gen.u"] = torch.from_numpy(philox_uniform(1234, np.array([0, 1, 7, 123456789], dtype=np.uint64)))
    for pname, p in model.named_parameters():
        if p.grad is None:  # e.g. Med3D's other branches: recorded so C++ checks they stay untouched
            out["nograd." + pname] = torch.zeros(1)
        else:
            out["grad." + pname] = signature(p.grad)
    if train:
        for bname, b in model.named_buffers():
            if b.is_floating_point():
                out["state." + bname] = signature(b)
    write(f"model_{name}_{'train' if train else 'eval'}", out)


def check_philox():
    # Values printed by the C++ kernels::philox_uniform / philox4x32_10 (a one-off C++ program).
    v = philox4x32_10(np.array([0, 5], dtype=np.uint64), 1234)
    assert int(v[0][0]) == CPP_WORD0_C0 and int(v[3][1]) == CPP_WORD3_C5, v
    assert philox_uniform(1234, np.array([7], dtype=np.uint64))[0] == CPP_U_C7


CPP_WORD0_C0 = 546353992
CPP_WORD3_C5 = 2516918072
CPP_U_C7 = 0.69943443998518684  # philox_uniform(1234, 0, 7)

SEG_INPUT = (1, 1, 16, 16, 16)
NETS = [
    ("seg_resnet10b", lambda: mt.MedicalNetSegmentation(10, 2, "B"), lambda m, x: m(x), SEG_INPUT),
    ("seg_resnet18a", lambda: mt.MedicalNetSegmentation(18, 2, "A"), lambda m, x: m(x), SEG_INPUT),
    ("seg_resnet50b", lambda: mt.MedicalNetSegmentation(50, 2, "B"), lambda m, x: m(x), SEG_INPUT),
    ("med3d_resnet10b", lambda: mt.Med3DNet(10, [2, 3, 4], "B"), lambda m, x: m(x, 1), SEG_INPUT),
    ("lung_resnet10b", lambda: mt.LungSegmentationNet(10, 2, "B"), lambda m, x: m(x), SEG_INPUT),
    ("classifier_resnet10b", lambda: mt.ResNetClassifier(10, 3, "B"), lambda m, x: m(x), (2, 1, 16, 16, 16)),
]


def generate(write):
    check_philox()
    only = os.environ.get("MED3D_GEN_ONLY")  # comma-separated net names, to regenerate a few
    only = set(only.split(",")) if only else None
    for name, make, fwd, shape in NETS:
        if only and name not in only:
            continue
        for train in (False, True):
            run(write, name, make, fwd, shape, train)
    if only and "dense_aspp_resnet10b" not in only:
        return
    run(write, "dense_aspp_resnet10b", lambda: mt.DenseAspp3d(10, 2, "B", p=0.1), lambda m, x: m(x), SEG_INPUT, False)
    run(write, "dense_aspp_resnet10b", lambda: mt.DenseAspp3d(10, 2, "B", p=0.0), lambda m, x: m(x), SEG_INPUT, True)
