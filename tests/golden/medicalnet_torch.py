"""PyTorch reference definitions of med3d's networks (tests/golden/gen_models.py uses them).

The encoder is MedicalNet's models/resnet.py (Chen, Ma, Zheng 2019; github.com/Tencent/MedicalNet),
written out again with the same module names so state-dict keys equal med3d's ResNet3d
(models/resnet3d.h): conv1 7^3 stride 2 -> bn1 -> relu -> maxpool 3 stride 2 -> layer1..4
(layer2 stride 2, layer3 dilation 2, layer4 dilation 4); shortcut A = detached strided
subsample + zero channels, B = 1x1x1 conv + BN (downsample.0/1). The heads mirror
models/{heads,med3d_net,lung_decoder,classifier,dense_aspp3d}.h key for key.
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv3x3x3(in_planes, out_planes, stride=1, dilation=1):
    return nn.Conv3d(in_planes, out_planes, kernel_size=3, dilation=dilation, stride=stride,
                     padding=dilation, bias=False)


def downsample_basic_block(x, planes, stride):
    out = F.avg_pool3d(x, kernel_size=1, stride=stride)
    zero_pads = torch.zeros(out.size(0), planes - out.size(1), out.size(2), out.size(3), out.size(4),
                            dtype=out.dtype)
    return torch.cat([out.data, zero_pads], dim=1)  # .data: detached, as in MedicalNet


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3x3(inplanes, planes, stride=stride, dilation=dilation)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride, dilation=dilation,
                               padding=dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + residual)


DEPTHS = {10: (BasicBlock, [1, 1, 1, 1]), 18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
          50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3]),
          152: (Bottleneck, [3, 8, 36, 3]), 200: (Bottleneck, [3, 24, 36, 3])}


class ResNet(nn.Module):
    """MedicalNet's ResNet without its conv_seg (the heads below add theirs)."""

    def __init__(self, depth, shortcut_type="B", in_channels=1):
        super().__init__()
        block, layers = DEPTHS[depth]
        self.inplanes = 64
        self.conv1 = nn.Conv3d(in_channels, 64, kernel_size=7, stride=(2, 2, 2), padding=(3, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=(3, 3, 3), stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], shortcut_type)
        self.layer2 = self._make_layer(block, 128, layers[1], shortcut_type, stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], shortcut_type, stride=1, dilation=2)
        self.layer4 = self._make_layer(block, 512, layers[3], shortcut_type, stride=1, dilation=4)
        self.out_channels = 512 * block.expansion

    def _make_layer(self, block, planes, blocks, shortcut_type, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            if shortcut_type == "A":
                downsample = partial(downsample_basic_block, planes=planes * block.expansion, stride=stride)
            else:
                downsample = nn.Sequential(
                    nn.Conv3d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm3d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride=stride, dilation=dilation, downsample=downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, dilation=dilation))
        return nn.Sequential(*layers)

    def encode(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class MedicalNetSegmentation(ResNet):
    def __init__(self, depth, classes, shortcut_type="B"):
        super().__init__(depth, shortcut_type)
        self.conv_seg = nn.Sequential(
            nn.ConvTranspose3d(self.out_channels, 32, 2, stride=2), nn.BatchNorm3d(32), nn.ReLU(inplace=True),
            nn.Conv3d(32, 32, kernel_size=3, stride=(1, 1, 1), padding=(1, 1, 1), bias=False),
            nn.BatchNorm3d(32), nn.ReLU(inplace=True),
            nn.Conv3d(32, classes, kernel_size=1, stride=(1, 1, 1), bias=False))

    def forward(self, x):
        return self.conv_seg(self.encode(x))


def upsample_to(logits, x):
    return F.interpolate(logits, size=x.shape[2:], mode="trilinear", align_corners=False)


class Med3DNet(ResNet):
    def __init__(self, depth, classes_per_domain, shortcut_type="B"):
        super().__init__(depth, shortcut_type)
        self.branches = nn.ModuleList(nn.Conv3d(self.out_channels, k, 1) for k in classes_per_domain)

    def forward(self, x, domain):
        return upsample_to(self.branches[domain](self.encode(x)), x)


class CoarseLiverNet(ResNet):
    def __init__(self, depth, shortcut_type="B"):
        super().__init__(depth, shortcut_type)
        self.conv_seg = nn.Conv3d(self.out_channels, 2, 1)

    def forward(self, x):
        return upsample_to(self.conv_seg(self.encode(x)), x)


class LungDecoderGroup(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False)
        self.up_bn = nn.BatchNorm3d(cout)
        self.conv = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.conv_bn = nn.BatchNorm3d(cout)

    def forward(self, x):
        x = F.relu(self.up_bn(self.up(x)))
        return F.relu(self.conv_bn(self.conv(x)))


class LungDecoder(nn.Module):
    def __init__(self, cin, classes):
        super().__init__()
        e = cin // 512
        widths = [256 * e, 128 * e, 64 * e]
        self.groups = nn.ModuleList(LungDecoderGroup(a, b) for a, b in zip([cin] + widths[:-1], widths))
        self.classifier = nn.Conv3d(widths[-1], classes, 1)

    def forward(self, x):
        for g in self.groups:
            x = g(x)
        return self.classifier(x)


class LungSegmentationNet(ResNet):
    def __init__(self, depth, classes, shortcut_type="B"):
        super().__init__(depth, shortcut_type)
        self.decoder = LungDecoder(self.out_channels, classes)

    def forward(self, x):
        return self.decoder(self.encode(x))


class ResNetClassifier(ResNet):
    def __init__(self, depth, classes, shortcut_type="B"):
        super().__init__(depth, shortcut_type)
        self.fc = nn.Linear(self.out_channels, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool3d(self.encode(x), 1), 1))


class DenseAsppBranch(nn.Module):
    def __init__(self, cin, d0, d1, rate, p):
        super().__init__()
        self.bn1 = nn.BatchNorm3d(cin)
        self.conv1 = nn.Conv3d(cin, d0, 1)
        self.bn2 = nn.BatchNorm3d(d0)
        self.conv2 = nn.Conv3d(d0, d1, 3, dilation=rate, padding=rate)
        self.p = p

    def forward(self, x):
        x = self.conv1(F.relu(self.bn1(x)))
        x = self.conv2(F.relu(self.bn2(x)))
        return F.dropout(x, self.p, self.training)


class DenseAspp3d(ResNet):
    def __init__(self, depth, classes, shortcut_type="B", d0=None, p=0.1, rates=(3, 6, 12, 18, 24)):
        super().__init__(depth, shortcut_type)
        d0 = d0 or (512 if self.out_channels >= 2048 else 128)
        d1 = d0 // 2
        self.p = p
        self.aspp = nn.ModuleList()
        c = self.out_channels
        for r in rates:
            self.aspp.append(DenseAsppBranch(c, d0, d1, r, p))
            c += d1
        self.classifier = nn.Conv3d(c, classes, 1)

    def forward(self, x):
        features = [self.encode(x)]
        for branch in self.aspp:
            features.append(branch(torch.cat(features, 1)))
        h = F.dropout(torch.cat(features, 1), self.p, self.training)
        return F.interpolate(self.classifier(h), scale_factor=8, mode="trilinear", align_corners=False)
