"""PyTorch references for models/weights, inflate, preact_resnet3d and unet3d.

generate(write) (run by make_fixtures.py gen_weights) writes
  weights_inflate.safetensors: a 2D conv (torch.nn.functional.conv2d) on a 3-channel image,
      to check that the averaging inflation of its weight applied to the image stacked along
      depth gives the same output;
  medicalnet_tiny_converted.safetensors: a MedicalNet-layout .pth (module. prefixes, the
      stem and a head layer only, values from pattern()) converted by tools/convert_medicalnet.py.
Command line (used by the ctest medicalnet_convert_*):
  gen_weights.py --medicalnet-pth OUT.pth [CLASSES]  MedicalNet ResNet-10-B + conv_seg, every
      value from pattern(), saved as {'state_dict': ...} with module. prefixes like MedicalNet's
  gen_weights.py --counts  parameter / state counts of the PyTorch definitions below; the
      numbers are hard-coded in tests/unit/test_preact.cpp and test_unet3d.cpp.
"""
import pathlib
import sys
import tempfile

import torch
import torch.nn as nn

HERE = pathlib.Path(__file__).resolve().parent


def key_hash(name):
    return sum(ord(c) * (j + 1) for j, c in enumerate(name)) % 1000


def pattern(name, tensor):
    """Exactly representable values that depend on the key and the element index."""
    h = key_hash(name)
    if not tensor.is_floating_point():
        return torch.full_like(tensor, h)
    i = torch.arange(tensor.numel(), dtype=torch.int64)
    return (((h + i) % 1999 - 999).to(torch.float64) / 1024).to(tensor.dtype).reshape(tensor.shape)


# --- MedicalNet's models/resnet.py, ResNet-10 with shortcut B and conv_seg ------------------
def conv3x3x3(i, o, stride=1, dilation=1):
    return nn.Conv3d(i, o, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = downsample


class MedicalNetResNet10(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv3d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, 2, 1)
        self.layer1 = self._make_layer(64, 1)
        self.layer2 = self._make_layer(128, 1, stride=2)
        self.layer3 = self._make_layer(256, 1, dilation=2)
        self.layer4 = self._make_layer(512, 1, dilation=4)
        self.conv_seg = nn.Sequential(
            nn.ConvTranspose3d(512, 32, 2, stride=2), nn.BatchNorm3d(32), nn.ReLU(inplace=True),
            nn.Conv3d(32, 32, 3, stride=1, padding=1, bias=False), nn.BatchNorm3d(32), nn.ReLU(inplace=True),
            nn.Conv3d(32, classes, 1, stride=1, bias=False))

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm3d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, dilation, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


def medicalnet_checkpoint(classes):
    state = MedicalNetResNet10(classes).state_dict()
    return {"state_dict": {"module." + k: pattern(k, v) for k, v in state.items()}}


# --- Pre-activation ResNet-3D (models/preact_resnet3d.cpp) -----------------------------------
class PreActBottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride, dilation):
        super().__init__()
        out = planes * 4
        self.bn1 = nn.BatchNorm3d(inplanes)
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv2 = conv3x3x3(planes, planes, stride, dilation)
        self.bn3 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out, 1, bias=False)
        self.downsample = nn.Conv3d(inplanes, out, 1, stride=stride, bias=False) \
            if stride != 1 or inplanes != out else None

    def forward(self, x):
        pre = torch.relu(self.bn1(x))
        identity = self.downsample(pre) if self.downsample is not None else x
        out = self.conv1(pre)
        out = self.conv2(torch.relu(self.bn2(out)))
        out = self.conv3(torch.relu(self.bn3(out)))
        return out + identity


BLOCKS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3], 200: [3, 24, 36, 3]}


class PreActResNet3d(nn.Module):
    def __init__(self, depth, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        inplanes = 64
        for index, (planes, stride, dilation) in enumerate([(64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4)]):
            blocks = []
            for b in range(BLOCKS[depth][index]):
                blocks.append(PreActBottleneck(inplanes, planes, stride if b == 0 else 1, dilation))
                inplanes = planes * 4
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.final_bn = nn.BatchNorm3d(inplanes)


# --- 3D U-Net (models/unet3d.cpp) ------------------------------------------------------------
class DoubleConv3d(nn.Module):
    def __init__(self, i, mid, o):
        super().__init__()
        self.conv1 = nn.Conv3d(i, mid, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, o, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(o)


class UNet3d(nn.Module):
    def __init__(self, in_channels, classes):
        super().__init__()
        self.enc1 = DoubleConv3d(in_channels, 32, 64)
        self.enc2 = DoubleConv3d(64, 64, 128)
        self.enc3 = DoubleConv3d(128, 128, 256)
        self.enc4 = DoubleConv3d(256, 256, 512)
        self.up3 = nn.ConvTranspose3d(512, 512, 2, stride=2)
        self.dec3 = DoubleConv3d(768, 256, 256)
        self.up2 = nn.ConvTranspose3d(256, 256, 2, stride=2)
        self.dec2 = DoubleConv3d(384, 128, 128)
        self.up1 = nn.ConvTranspose3d(128, 128, 2, stride=2)
        self.dec1 = DoubleConv3d(192, 64, 64)
        self.head = nn.Conv3d(64, classes, 1)


def counts(model):
    params = sum(p.numel() for p in model.parameters())
    state = sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())
    return params, state


def generate(write):
    # Inflation reference: conv2d with padding 1 on a [1, 3, 9, 11] image.
    w2d = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    image = torch.randn(1, 3, 9, 11, dtype=torch.float64)
    y = torch.nn.functional.conv2d(image, w2d, b, padding=1)
    write("weights_inflate", {"w2d": w2d.float(), "bias": b.float(), "image": image.float(), "y": y.float()})

    # A tiny MedicalNet-layout checkpoint through the converter (CI has no torch to run it).
    sys.path.insert(0, str(HERE.parent.parent / "tools"))
    import convert_medicalnet
    full = medicalnet_checkpoint(2)["state_dict"]
    keep = [k for k in full if k.startswith(("module.conv1.", "module.bn1.", "module.conv_seg.6."))]
    with tempfile.TemporaryDirectory() as tmp:
        pth = pathlib.Path(tmp) / "resnet_10_tiny.pth"
        torch.save({"state_dict": {k: full[k] for k in keep}}, str(pth))
        convert_medicalnet.convert(pth, HERE / "medicalnet_tiny_converted.safetensors")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "--medicalnet-pth":
        classes = int(sys.argv[3]) if len(sys.argv) > 3 else 2
        torch.save(medicalnet_checkpoint(classes), sys.argv[2])
    elif len(sys.argv) == 2 and sys.argv[1] == "--counts":
        for depth in (50, 101, 152, 200):
            print(f"PreActResNet3d({depth}): parameters, state = {counts(PreActResNet3d(depth))}")
        print(f"UNet3d(1, 2): parameters, state = {counts(UNet3d(1, 2))}")
        print(f"UNet3d(4, 3): parameters, state = {counts(UNet3d(4, 3))}")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
