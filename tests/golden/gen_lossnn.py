"""Golden fixtures for the softmax family, losses, linear, concat, flatten and shortcut A.

Every fixture holds f32 inputs, a random weight tensor w for outputs that are not scalars
(the scalar objective is sum(y * w)), the outputs and the gradients PyTorch computes.
Labels are stored as int64 (PyTorch's label dtype); -100 marks ignored voxels.
"""
import torch
import torch.nn.functional as F

SHAPE = (2, 3, 5, 7, 6)


def leaf(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).requires_grad_(True)


def grads_of(loss, *inputs):
    return [g for g in torch.autograd.grad(loss, inputs)]


def labels_with_ignored(shape, classes, fraction=0.1):
    labels = torch.randint(0, classes, shape)
    labels[torch.rand(shape) < fraction] = -100
    return labels


def soft_dice(logits, labels, smooth=1e-5, include_background=True):
    """Reference for med3d::soft_dice_loss (see engine/include/med3d/ops/loss.h)."""
    p = torch.softmax(logits, 1)
    g = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(p.dtype)
    dims = [0] + list(range(2, logits.dim()))
    dice = (2 * (p * g).sum(dims) + smooth) / (p.sum(dims) + g.sum(dims) + smooth)
    if not include_background:
        dice = dice[1:]
    return 1 - dice.mean()


def gen_softmax(write):
    x = leaf(*SHAPE, scale=2.0)
    w = torch.randn(*SHAPE)
    y = torch.softmax(x, 1)
    (dx,) = grads_of((y * w).sum(), x)
    ly = torch.log_softmax(x, 1)
    (dlx,) = grads_of((ly * w).sum(), x)
    write("lossnn_softmax", {"x": x, "w": w, "softmax": y, "softmax_dx": dx,
                             "log_softmax": ly, "log_softmax_dx": dlx,
                             "argmax": torch.argmax(x, 1).to(torch.int32)})


def gen_cross_entropy(write):
    out = {}
    for name, shape in (("5", SHAPE), ("2", (7, 4))):
        x = leaf(*shape, scale=2.0)
        classes = shape[1]
        labels = labels_with_ignored((shape[0],) + shape[2:], classes)
        weights = torch.rand(classes) + 0.5
        loss = F.cross_entropy(x, labels)
        (dx,) = grads_of(loss, x)
        loss_w = F.cross_entropy(x, labels, weight=weights)
        (dx_w,) = grads_of(loss_w, x)
        out.update({f"x{name}": x, f"labels{name}": labels, f"weights{name}": weights,
                    f"loss{name}": loss.reshape(1), f"dx{name}": dx,
                    f"loss{name}_weighted": loss_w.reshape(1), f"dx{name}_weighted": dx_w})
    write("lossnn_cross_entropy", out)


def gen_dice(write):
    out = {}
    for name, shape in (("5", SHAPE), ("2", (7, 4))):
        x = leaf(*shape, scale=2.0)
        labels = torch.randint(0, shape[1], (shape[0],) + shape[2:])
        out.update({f"x{name}": x, f"labels{name}": labels})
        for variant, background in (("bg", True), ("nobg", False)):
            loss = soft_dice(x, labels, include_background=background)
            (dx,) = grads_of(loss, x)
            out.update({f"loss{name}_{variant}": loss.reshape(1), f"dx{name}_{variant}": dx})
    write("lossnn_dice", out)


def gen_regression(write):
    x = leaf(*SHAPE, scale=3.0)
    with torch.no_grad():
        x.view(-1)[:4] = torch.tensor([40.0, -40.0, 90.0, -90.0])  # stable-form tails
    t = leaf(*SHAPE)
    loss = F.mse_loss(x, t)
    dx, dt = grads_of(loss, x, t)
    out = {"x": x, "t": t, "mse": loss.reshape(1), "mse_dx": dx, "mse_dt": dt}
    p = torch.rand(*SHAPE).requires_grad_(True)
    pos_weight = torch.rand(SHAPE[1]) * 2 + 0.5
    out.update({"p": p, "pos_weight": pos_weight})
    loss = F.binary_cross_entropy_with_logits(x, p)
    dx, dp = grads_of(loss, x, p)
    out.update({"bce": loss.reshape(1), "bce_dx": dx, "bce_dp": dp})
    # med3d applies pos_weight [C] along axis 1; PyTorch needs it shaped [C, 1, 1, 1] for that.
    loss = F.binary_cross_entropy_with_logits(x, p, pos_weight=pos_weight.reshape(-1, 1, 1, 1))
    dx, dp = grads_of(loss, x, p)
    out.update({"bce_pw": loss.reshape(1), "bce_pw_dx": dx, "bce_pw_dp": dp})
    x2 = leaf(7, 4, scale=3.0)
    p2 = torch.rand(7, 4).requires_grad_(True)
    pos_weight2 = torch.rand(4) * 2 + 0.5
    loss = F.binary_cross_entropy_with_logits(x2, p2, pos_weight=pos_weight2)
    dx, dp = grads_of(loss, x2, p2)
    out.update({"x2": x2, "p2": p2, "pos_weight2": pos_weight2, "bce2_pw": loss.reshape(1),
                "bce2_pw_dx": dx, "bce2_pw_dp": dp})
    write("lossnn_regression", out)


def gen_linear(write):
    x, w, b = leaf(5, 7), leaf(4, 7), leaf(4)
    g = torch.randn(5, 4)
    y = F.linear(x, w, b)
    dx, dw, db = grads_of((y * g).sum(), x, w, b)
    write("lossnn_linear", {"x": x, "w": w, "b": b, "g": g, "y": y, "dx": dx, "dw": dw, "db": db})


def gen_shape(write):
    out = {}
    parts = {1: [leaf(2, 3, 5, 7, 6), leaf(2, 1, 5, 7, 6), leaf(2, 4, 5, 7, 6)],
             0: [leaf(2, 3, 5, 7, 6), leaf(1, 3, 5, 7, 6), leaf(3, 3, 5, 7, 6)]}
    for axis, xs in parts.items():
        y = torch.cat(xs, axis)
        w = torch.randn(y.shape)
        grads = grads_of((y * w).sum(), *xs)
        for k, (x, g) in enumerate(zip(xs, grads)):
            out[f"cat{axis}_x{k}"] = x
            out[f"cat{axis}_dx{k}"] = g
        out.update({f"cat{axis}_y": y, f"cat{axis}_w": w})
    x = leaf(*SHAPE)
    w = torch.randn(2, 3 * 5 * 7 * 6)
    y = torch.flatten(x, 1)
    (dx,) = grads_of((y * w).sum(), x)
    out.update({"flat_x": x, "flat_w": w, "flat_y": y, "flat_dx": dx})
    # MedicalNet's downsample_basic_block (shortcut type A) with stride 2 and 5 planes.
    x = torch.randn(*SHAPE)
    sub = F.avg_pool3d(x, kernel_size=1, stride=2)
    pads = torch.zeros(sub.size(0), 5 - sub.size(1), *sub.shape[2:])
    out.update({"shortcut_x": x, "shortcut_y": torch.cat([sub, pads], 1)})
    write("lossnn_shape", out)


def generate(write):
    gen_softmax(write)
    gen_cross_entropy(write)
    gen_dice(write)
    gen_regression(write)
    gen_linear(write)
    gen_shape(write)
