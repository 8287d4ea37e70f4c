#!/usr/bin/python3
"""PyTorch CPU twin of `med3d-bench step`: whole SGD training steps of MedicalNet's ResNet-3D
(models/resnet.py of MedicalNet: shortcut A for 18/34, B otherwise; layer3 dilation 2, layer4
dilation 4) with the MedicalNet segmentation head or a 1x1x1 classifier upsampled to the input,
2 classes, random data, SGD momentum 0.9 weight decay 1e-3, f32. Prints one JSON document.

Usage: /usr/bin/python3 bench/torch_step.py --arch resnet18 --input 2x1x32x64x64
         [--head medicalnet|pointwise] [--threads 2] [--runs 10] [--warmup 2] [--json FILE]
"""
import argparse
import resource
import statistics
import time
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_ops import emit  # bench/ is the script's folder, first on sys.path


def downsample_basic_block(x, planes, stride):
    out = F.avg_pool3d(x, kernel_size=1, stride=stride)
    zeros = torch.zeros(out.size(0), planes - out.size(1), out.size(2), out.size(3), out.size(4),
                        dtype=out.dtype)
    return torch.cat([out.data, zeros], dim=1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + residual)


BLOCKS = {10: (BasicBlock, [1, 1, 1, 1]), 18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
          50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3])}


class Net(nn.Module):
    def __init__(self, depth, head, in_channels=1, classes=2):
        super().__init__()
        block, layers = BLOCKS[depth]
        self.shortcut = 'A' if depth in (18, 34) else 'B'
        self.inplanes = 64
        self.conv1 = nn.Conv3d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], dilation=2)
        self.layer4 = self._make_layer(block, 512, layers[3], dilation=4)
        c = 512 * block.expansion
        self.head = head
        if head == 'medicalnet':
            self.conv_seg = nn.Sequential(
                nn.ConvTranspose3d(c, 32, 2, stride=2), nn.BatchNorm3d(32), nn.ReLU(inplace=True),
                nn.Conv3d(32, 32, 3, padding=1, bias=False), nn.BatchNorm3d(32), nn.ReLU(inplace=True),
                nn.Conv3d(32, classes, 1, bias=False))
        else:
            self.conv_seg = nn.Conv3d(c, classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out')

    def _make_layer(self, block, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            if self.shortcut == 'A':
                downsample = partial(downsample_basic_block, planes=planes * block.expansion, stride=stride)
            else:
                downsample = nn.Sequential(
                    nn.Conv3d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                    nn.BatchNorm3d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        y = F.max_pool3d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        y = self.layer4(self.layer3(self.layer2(self.layer1(y))))
        y = self.conv_seg(y)
        if self.head == 'pointwise':
            y = F.interpolate(y, size=x.shape[2:], mode='trilinear', align_corners=False)
        return y


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
    net = Net(int(a.arch.replace('resnet', '')), a.head, shape[1]).train()
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
