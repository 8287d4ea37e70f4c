#!/usr/bin/python3
"""PyTorch CPU twin of `med3d-bench step`: whole SGD training steps of MedicalNet's ResNet-3D
(tests/golden/medicalnet_torch.py: shortcut A for 18/34, B otherwise; layer3 dilation 2, layer4
dilation 4) with the MedicalNet segmentation head or a 1x1x1 classifier upsampled to the input,
2 classes, random data, SGD momentum 0.9 weight decay 1e-3, f32. Prints one JSON document.

Usage: /usr/bin/python3 bench/torch_step.py --arch resnet18 --input 2x1x32x64x64
         [--head medicalnet|pointwise] [--threads 2] [--runs 10] [--warmup 2] [--json FILE]
"""
import argparse
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from torch_ops import emit  # bench/ is the script's folder, first on sys.path

# The PyTorch definitions the model golden tests use (MedicalNet's models/resnet.py, key for key).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'golden'))
from medicalnet_torch import CoarseLiverNet, MedicalNetSegmentation  # noqa: E402


def make_net(depth, head):
    """MedicalNet's ResNet (shortcut A for 18/34, B otherwise) with the chosen head, 2 classes."""
    shortcut = 'A' if depth in (18, 34) else 'B'
    if head == 'medicalnet':
        return MedicalNetSegmentation(depth, 2, shortcut)
    return CoarseLiverNet(depth, shortcut)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--arch', default='resnet18')
    ap.add_argument('--input', default='2x1x32x64x64')
    ap.add_argument('--head', default='medicalnet', choices=['medicalnet', 'pointwise'])
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--runs', type=int, default=10)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--json')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    shape = [int(v) for v in a.input.split('x')]
    if shape[1] != 1:
        raise SystemExit('torch_step.py: the MedicalNet definitions take 1 input channel')
    net = make_net(int(a.arch.replace('resnet', '')), a.head).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9, weight_decay=1e-3)
    x = torch.randn(*shape)
    with torch.no_grad():
        out = net(x).shape
    labels = ((torch.arange(out[0] * out[2] * out[3] * out[4]) // 97) % 2).reshape(out[0], *out[2:])
    total, fwd, bwd, upd = [], [], [], []
    for i in range(a.warmup + a.runs):
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(x), labels)
        loss_value = loss.item()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if i >= a.warmup:
            total.append(t3 - t0), fwd.append(t1 - t0), bwd.append(t2 - t1), upd.append(t3 - t2)
    ms = lambda v: 1e3 * statistics.median(v)
    row = {'arch': a.arch, 'head': a.head, 'input': a.input, 'step_ms': ms(total), 'step_min_ms': 1e3 * min(total),
           'forward_ms': ms(fwd), 'backward_ms': ms(bwd), 'update_ms': ms(upd),
           'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'loss': loss_value}
    emit('torch_step', a, [row])

if __name__ == '__main__':
    main()
