#!/usr/bin/python3
"""PyTorch CPU twin of `med3d-bench conv` and `med3d-bench ops`: times exactly the rows of a
med3d-bench JSON file (its "geometry" list, written with --json), so the shapes and the FLOP and
byte counts are the bench's own (bench/flops.h). Prints one JSON document with torch_ms and
torch_min_ms per row (and the GFLOP/s or GB/s those give).

Conv passes: fprop = F.conv3d; dgrad and wgrad = aten.convolution_backward with only the input
or only the weight gradient requested; for the transposed head row tfwd = F.conv_transpose3d and
tdgrad / twgrad its convolution_backward. Ops: forward, then backward from a seed of ones
(cross-entropy: from the loss), through autograd, as the bench does through its tape.

Usage: /usr/bin/python3 bench/torch_ops.py conv.json [--threads 2] [--runs 20] [--warmup 3] [--json FILE]
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    t = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        t.append(time.perf_counter() - start)
    return statistics.median(t), min(t)


def conv_row(g):
    n, c, k, ks = g['N'], g['C'], g['K'], g['kernel']
    s, p, d, transposed = g['stride'], g['pad'], g['dilation'], g['transposed']
    x = torch.randn(n, c, g['D'], g['H'], g['W'])
    if transposed:
        w = torch.randn(c, k, ks, ks, ks)
        y = F.conv_transpose3d(x, w, None, s, p, 0, 1, d)
    else:
        w = torch.randn(k, c, ks, ks, ks)
        y = F.conv3d(x, w, None, s, p, d)
    dy = torch.randn_like(y)
    st, pd, dl, op = [s] * 3, [p] * 3, [d] * 3, [0] * 3
    backward = torch.ops.aten.convolution_backward
    if g['pass'] in ('fprop', 'tfwd'):
        if transposed:
            return lambda: F.conv_transpose3d(x, w, None, s, p, 0, 1, d)
        return lambda: F.conv3d(x, w, None, s, p, d)
    mask = [True, False, False] if g['pass'] in ('dgrad', 'tdgrad') else [False, True, False]
    return lambda: backward(dy, x, w, None, st, pd, dl, transposed, op, 1, mask)


def op_row(g):
    shape = g['shape']
    x = torch.randn(*shape, requires_grad=True)
    leaves = [x]
    name = g['op']
    if name == 'batch_norm':
        weight = torch.ones(shape[1], requires_grad=True)
        bias = torch.zeros(shape[1], requires_grad=True)
        mean, var = torch.zeros(shape[1]), torch.ones(shape[1])
        leaves += [weight, bias]
        fwd = lambda: F.batch_norm(x, mean, var, weight, bias, True)
    elif name == 'relu':
        fwd = lambda: F.relu(x)
    elif name == 'max_pool_k3s2':
        fwd = lambda: F.max_pool3d(x, 3, 2, 1)
    elif name == 'upsample_trilinear_x2':
        fwd = lambda: F.interpolate(x, scale_factor=2.0, mode='trilinear', align_corners=False)
    elif name == 'cross_entropy':
        labels = ((torch.arange(x.numel() // shape[1]) * 7919) % shape[1]).reshape(shape[0], *shape[2:])
        fwd = lambda: F.cross_entropy(x, labels)
    else:
        raise SystemExit(f'unknown op {name}')
    return fwd, leaves


def time_op(fwd, leaves, warmup, runs):
    f, b = [], []
    for i in range(warmup + runs):
        for leaf in leaves:
            leaf.grad = None
        t0 = time.perf_counter()
        y = fwd()
        t1 = time.perf_counter()
        seed = None if y.dim() == 0 else torch.ones_like(y)
        t2 = time.perf_counter()
        y.backward(seed)
        t3 = time.perf_counter()
        if i >= warmup:
            f.append(t1 - t0), b.append(t3 - t2)
    return (statistics.median(f), min(f)), (statistics.median(b), min(b))


def emit(name, args, rows):
    """Prints the JSON document of a run (and writes it to args.json when given)."""
    doc = {'bench': name, 'torch': torch.__version__, 'threads': args.threads, 'runs': args.runs,
           'warmup': args.warmup, 'load_average': ' '.join(f'{v:.2f}' for v in os.getloadavg()), 'rows': rows}
    text = json.dumps(doc, indent=2)
    if args.json:
        with open(args.json, 'w') as f:
            f.write(text + '\n')
    print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('bench_json', help='JSON written by med3d-bench conv or ops --json')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--runs', type=int, default=20)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--json')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    with open(a.bench_json) as f:
        bench = json.load(f)
    rows = []
    if bench['bench'] == 'conv':
        for g, ours in zip(bench['geometry'], bench['rows']):
            med, low = timed(conv_row(g), a.warmup, a.runs)
            rows.append({'layer': ours['layer'], 'pass': g['pass'], 'torch_ms': 1e3 * med, 'torch_min_ms': 1e3 * low,
                         'torch_effective_gflops': g['effective_flops'] / med / 1e9})
    else:
        done = {}
        for g in bench['geometry']:
            if g['op'] not in done:
                done[g['op']] = time_op(*op_row(g), a.warmup, a.runs)
            med, low = done[g['op']][0 if g['pass'] == 'fwd' else 1]
            rows.append({'op': g['op'], 'pass': g['pass'], 'torch_ms': 1e3 * med, 'torch_min_ms': 1e3 * low,
                         'torch_gbs': g['bytes'] / med / 1e9})
    emit('torch_' + bench['bench'], a, rows)

if __name__ == '__main__':
    main()
