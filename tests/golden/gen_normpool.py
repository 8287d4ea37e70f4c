"""Golden fixtures for batch norm, pooling and upsampling (tests/unit/test_{batch_norm,pool,upsample}.cpp).

Every variant stores its forward output `<variant>.y` and the gradient `<variant>.dx` (and
dweight/dbias for batch norm) of loss = sum(y * w). The upstream gradient w is the first
numel(y) values of the random vector `w` stored once per file, reshaped like y (this keeps
the fixtures small).
"""
import torch
import torch.nn.functional as F

W_LENGTH = 6144  # the largest output below (scale 8 of 2x3x2)


def upstream(w, y):
    return w[: y.numel()].reshape(y.shape)


def grads_of(y, w, *inputs):
    for t in inputs:
        t.grad = None
    (y * w).sum().backward()
    return [t.grad for t in inputs]


def leaf(shape, scale=1.0, shift=0.0):
    return (torch.randn(*shape) * scale + shift).requires_grad_()


def distinct(shape):
    """Values without ties, so max pooling's argmax is unambiguous."""
    n = 1
    for s in shape:
        n *= s
    return ((torch.randperm(n).float() - n / 2) / 64).reshape(shape).requires_grad_()


def batch_norm(write):
    out = {}
    x = leaf((2, 3, 5, 7, 6), scale=2.0, shift=3.0)
    weight = leaf((3,))
    bias = leaf((3,))
    w = torch.randn(W_LENGTH)
    mean0 = torch.randn(3)
    var0 = torch.rand(3) + 0.5
    out.update({"x": x, "weight": weight, "bias": bias, "w": w,
                "running_mean": mean0, "running_var": var0})

    # Training, affine, with running stats (momentum 0.3 to see it used).
    rm, rv = mean0.clone(), var0.clone()
    y = F.batch_norm(x, rm, rv, weight, bias, training=True, momentum=0.3, eps=1e-5)
    dx, dw, db = grads_of(y, upstream(w, y), x, weight, bias)
    out.update({"train_affine.y": y, "train_affine.dx": dx, "train_affine.dweight": dw,
                "train_affine.dbias": db, "train_affine.running_mean": rm,
                "train_affine.running_var": rv})

    # Training without affine parameters or running stats, default momentum and eps.
    y = F.batch_norm(x, None, None, None, None, training=True)
    (dx,) = grads_of(y, upstream(w, y), x)
    out.update({"train_plain.y": y, "train_plain.dx": dx})

    # Eval with running stats.
    y = F.batch_norm(x, mean0, var0, weight, bias, training=False, eps=1e-3)
    dx, dw, db = grads_of(y, upstream(w, y), x, weight, bias)
    out.update({"eval_affine.y": y, "eval_affine.dx": dx, "eval_affine.dweight": dw,
                "eval_affine.dbias": db})

    # [N, C] features.
    x2 = leaf((8, 3), shift=-1.0)
    y = F.batch_norm(x2, None, None, weight, bias, training=True)
    dx, dw, db = grads_of(y, upstream(w, y), x2, weight, bias)
    out.update({"x2": x2, "features.y": y, "features.dx": dx,
                "features.dweight": dw, "features.dbias": db})
    # Fused with the following ReLU (batch_norm_relu3d), training with running stats (28% of
    # the outputs are clipped). No random draws: the fixtures after this one stay as they were.
    rm, rv = mean0.clone(), var0.clone()
    y = F.relu(F.batch_norm(x, rm, rv, weight, bias, training=True, momentum=0.3, eps=1e-5))
    dx, dw, db = grads_of(y, upstream(w, y), x, weight, bias)
    out.update({"train_relu.y": y, "train_relu.dx": dx, "train_relu.dweight": dw,
                "train_relu.dbias": db, "train_relu.running_mean": rm,
                "train_relu.running_var": rv})

    # Fused, eval.
    y = F.relu(F.batch_norm(x, mean0, var0, weight, bias, training=False, eps=1e-3))
    dx, dw, db = grads_of(y, upstream(w, y), x, weight, bias)
    out.update({"eval_relu.y": y, "eval_relu.dx": dx, "eval_relu.dweight": dw,
                "eval_relu.dbias": db})
    write("batch_norm", out)


POOLS = [
    # name, function of x
    ("max_k3s2p1", lambda x: F.max_pool3d(x, 3, 2, 1)),
    ("max_k2s2", lambda x: F.max_pool3d(x, 2, 2)),
    ("max_aniso", lambda x: F.max_pool3d(x, (3, 2, 3), (1, 2, 2), (1, 1, 0))),
    ("avg_k3s2p1_pad", lambda x: F.avg_pool3d(x, 3, 2, 1, count_include_pad=True)),
    ("avg_k3s2p1_nopad", lambda x: F.avg_pool3d(x, 3, 2, 1, count_include_pad=False)),
    ("avg_aniso_pad", lambda x: F.avg_pool3d(x, (2, 3, 3), (2, 1, 2), (0, 1, 1), count_include_pad=True)),
    ("avg_aniso_nopad", lambda x: F.avg_pool3d(x, (2, 3, 3), (2, 1, 2), (0, 1, 1), count_include_pad=False)),
    ("adaptive_1x1x1", lambda x: F.adaptive_avg_pool3d(x, (1, 1, 1))),
    ("adaptive_2x3x2", lambda x: F.adaptive_avg_pool3d(x, (2, 3, 2))),
    ("adaptive_6x4x9", lambda x: F.adaptive_avg_pool3d(x, (6, 4, 9))),
]


def pool(write):
    x = distinct((2, 3, 5, 7, 6))
    w = torch.randn(W_LENGTH)
    out = {"x": x, "w": w}
    for name, fn in POOLS:
        y = fn(x)
        (dx,) = grads_of(y, upstream(w, y), x)
        out.update({f"{name}.y": y, f"{name}.dx": dx})
    write("pool", out)


UPSAMPLES = [
    # name, input, function of x
    ("trilinear_size_up_down_ac0", "x", lambda x: F.interpolate(x, size=(9, 4, 11), mode="trilinear", align_corners=False)),
    ("trilinear_size_up_down_ac1", "x", lambda x: F.interpolate(x, size=(9, 4, 11), mode="trilinear", align_corners=True)),
    ("trilinear_size_mixed_ac0", "x", lambda x: F.interpolate(x, size=(5, 1, 13), mode="trilinear", align_corners=False)),
    ("trilinear_size_mixed_ac1", "x", lambda x: F.interpolate(x, size=(5, 1, 13), mode="trilinear", align_corners=True)),
    ("trilinear_scale2_ac0", "xs", lambda x: F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)),
    ("trilinear_scale2_ac1", "xs", lambda x: F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=True)),
    ("trilinear_scale8_ac0", "x8", lambda x: F.interpolate(x, scale_factor=8.0, mode="trilinear", align_corners=False)),
    ("trilinear_scale8_ac1", "x8", lambda x: F.interpolate(x, scale_factor=8.0, mode="trilinear", align_corners=True)),
    ("trilinear_scale_odd_ac0", "x", lambda x: F.interpolate(x, scale_factor=(1.1, 2.5, 0.75), mode="trilinear", align_corners=False)),
    ("trilinear_scale_odd_ac1", "x", lambda x: F.interpolate(x, scale_factor=(1.1, 2.5, 0.75), mode="trilinear", align_corners=True)),
    ("nearest_size_up_down", "x", lambda x: F.interpolate(x, size=(9, 4, 11), mode="nearest")),
    ("nearest_size_double", "x", lambda x: F.interpolate(x, size=(10, 14, 3), mode="nearest")),
    ("nearest_scale2", "xs", lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest")),
    ("nearest_scale8", "x8", lambda x: F.interpolate(x, scale_factor=8.0, mode="nearest")),
    # Not 1.1 on D as for trilinear: with out == in PyTorch 1.13's NCDHW nearest forward reads
    # 0, 0, 1, 2, 3 but its backward copies (0, 1, 2, 3, 4); med3d's gradient follows its forward.
    ("nearest_scale_odd", "x", lambda x: F.interpolate(x, scale_factor=(1.3, 2.5, 0.75), mode="nearest")),
]


def upsample(write):
    inputs = {"x": leaf((2, 3, 5, 7, 6)), "xs": leaf((1, 2, 3, 4, 3)), "x8": leaf((1, 1, 2, 3, 2))}
    w = torch.randn(W_LENGTH)
    for mode in ("trilinear", "nearest"):
        out = dict(inputs, w=w)
        for name, input_name, fn in UPSAMPLES:
            if not name.startswith(mode):
                continue
            x = inputs[input_name]
            y = fn(x)
            assert y.numel() <= W_LENGTH, name
            (dx,) = grads_of(y, upstream(w, y), x)
            out.update({f"{name}.y": y, f"{name}.dx": dx})
        if mode == "nearest":  # forward only: see the comment on nearest_scale_odd
            y = F.interpolate(inputs["x"], scale_factor=(1.1, 1.0, 1.0), mode="nearest")
            out["nearest_scale_same_size.y"] = y
        write(f"upsample_{mode}", out)


def generate(write):
    batch_norm(write)
    pool(write)
    upsample(write)
