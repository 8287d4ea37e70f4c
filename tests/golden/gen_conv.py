"""Golden fixtures for conv3d and conv_transpose3d: forward, dx, dw and db in f32.

One file per variant, conv3d_<name> or conv_transpose3d_<name>, holding x, w, b (absent for
no-bias cases), the options (stride, padding, dilation, output_padding, groups as int64), the
output y, a random upstream gradient dy and the gradients dx, dw, db of sum(y * dy).
"""
import torch
import torch.nn.functional as F

# name: (N, C_in, C_out, volume, kernel, options); options default to PyTorch's.
CONV3D = {
    "stride2": (2, 3, 4, (5, 7, 6), (3, 3, 3), dict(stride=(2, 2, 2), padding=(1, 1, 1))),
    "dilation2": (2, 3, 4, (5, 7, 6), (3, 3, 3), dict(padding=(2, 2, 2), dilation=(2, 2, 2))),
    "dilation12": (2, 3, 4, (5, 7, 6), (3, 3, 3), dict(padding=(12, 12, 12), dilation=(12, 12, 12))),
    "padding_per_axis": (2, 3, 4, (5, 7, 6), (3, 2, 3),
                         dict(stride=(1, 2, 1), padding=(0, 1, 2), dilation=(1, 1, 2))),
    "groups2": (2, 4, 6, (5, 7, 6), (3, 3, 3), dict(padding=(1, 1, 1), groups=2)),
    "pointwise": (2, 3, 4, (5, 7, 6), (1, 1, 1), dict()),
    "no_bias": (2, 3, 4, (5, 7, 6), (3, 3, 3), dict(padding=(1, 1, 1), bias=False)),
    "stem_k7_s2_p3": (2, 1, 4, (9, 11, 10), (7, 7, 7), dict(stride=(2, 2, 2), padding=(3, 3, 3))),
    # Output plane 0 along depth reads padding only, so the kernels skip it for that plane.
    "stride4_pad2_padding_plane": (2, 3, 4, (5, 7, 6), (1, 3, 3), dict(stride=(4, 1, 1), padding=(2, 1, 1))),
    # Large enough that the off-centre taps of a dilation-12 kernel land inside the volume.
    "k3_d12_p12": (1, 2, 3, (14, 15, 13), (3, 3, 3), dict(padding=(12, 12, 12), dilation=(12, 12, 12))),
}

CONV_TRANSPOSE3D = {
    "basic": (2, 3, 4, (5, 7, 6), (3, 3, 3), dict(padding=(1, 1, 1))),
    "stride2_output_padding1": (2, 3, 4, (5, 7, 6), (3, 3, 3),
                                dict(stride=(2, 2, 2), padding=(1, 1, 1), output_padding=(1, 1, 1))),
    "k2_s2": (2, 3, 4, (5, 7, 6), (2, 2, 2), dict(stride=(2, 2, 2))),
    "groups2": (2, 4, 6, (5, 7, 6), (3, 3, 3), dict(stride=(2, 1, 2), padding=(1, 1, 1), groups=2)),
    "dilation2": (2, 3, 4, (5, 7, 6), (3, 3, 3), dict(padding=(1, 2, 3), dilation=(2, 2, 2))),
    "output_padding_below_dilation": (2, 3, 2, (5, 7, 6), (3, 3, 3),
                                      dict(dilation=(2, 2, 2), output_padding=(1, 0, 1))),
    "no_bias": (2, 3, 4, (5, 7, 6), (3, 3, 3), dict(padding=(1, 1, 1), bias=False)),
}


def case(transposed, n, c_in, c_out, volume, kernel, options):
    options = dict(options)
    has_bias = options.pop("bias", True)
    groups = options.get("groups", 1)
    x = torch.randn(n, c_in, *volume, requires_grad=True)
    w_shape = (c_in, c_out // groups, *kernel) if transposed else (c_out, c_in // groups, *kernel)
    w = torch.randn(*w_shape, requires_grad=True)
    b = torch.randn(c_out, requires_grad=True) if has_bias else None
    fn = F.conv_transpose3d if transposed else F.conv3d
    y = fn(x, w, b, **options)
    dy = torch.randn_like(y)
    y.backward(dy)
    tensors = {"x": x, "w": w, "y": y, "dy": dy, "dx": x.grad, "dw": w.grad}
    if has_bias:
        tensors.update(b=b, db=b.grad)
    for key in ("stride", "padding", "dilation", "output_padding"):
        tensors[key] = torch.tensor(options.get(key, (0, 0, 0) if "padding" in key else (1, 1, 1)))
    tensors["groups"] = torch.tensor([groups])
    return tensors


def generate(write):
    for name, args in CONV3D.items():
        write(f"conv3d_{name}", case(False, *args))
    for name, args in CONV_TRANSPOSE3D.items():
        write(f"conv_transpose3d_{name}", case(True, *args))
