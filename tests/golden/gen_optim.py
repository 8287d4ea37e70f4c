"""Golden fixtures for the optimisers and learning-rate schedules (torch.optim, PyTorch 1.13).

optim.safetensors: two f64 parameters in two groups ("base" at lr 0.01, "new" at 100x), five
fixed gradients (p1 gets none at step 3, so its step count lags), and the parameters after each
step for every optimiser configuration below. lr_schedule.safetensors: each group's lr before
and after each of 12 schedule steps. tests/unit/test_optim.cpp and test_lr_schedule.cpp build
the same configurations in C++; keep the two in sync.
"""
import math

import torch
from torch.optim import lr_scheduler

STEPS = 5
BASE_LR, NEW_LR = 0.01, 1.0


def optimiser_configs():
    """name -> (constructor, per-group extra options)."""
    sgd, adam, adamw = torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW
    return {
        "sgd": (lambda g: sgd(g, lr=0.1), {}),
        "sgd_momentum": (lambda g: sgd(g, lr=0.1, momentum=0.9, weight_decay=1e-3), {}),
        "sgd_nesterov": (lambda g: sgd(g, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), {}),
        "sgd_dampening": (lambda g: sgd(g, lr=0.1, momentum=0.8, dampening=0.3), {}),
        "adam": (lambda g: adam(g, lr=0.1, betas=(0.8, 0.99), weight_decay=1e-2), {}),
        # AdamW's default weight decay (1e-2) for "base", an explicit 0.1 for "new".
        "adamw": (lambda g: adamw(g, lr=0.1, betas=(0.85, 0.995), eps=1e-6), {"new": {"weight_decay": 0.1}}),
    }


def generate_optim(write):
    p0 = torch.randn(3, 4, dtype=torch.float64)
    p1 = torch.randn(5, dtype=torch.float64)
    g0 = torch.randn(STEPS, 3, 4, dtype=torch.float64)
    g1 = torch.randn(STEPS, 5, dtype=torch.float64)
    g1[:, 4] *= 1e-7  # tiny gradients, where Adam's eps decides the step size
    has_grad = torch.ones(STEPS, 2, dtype=torch.uint8)
    has_grad[2, 1] = 0
    out = {"p0": p0, "p1": p1, "g0": g0, "g1": g1, "has_grad": has_grad}
    for name, (make, extra) in optimiser_configs().items():
        a = p0.clone().requires_grad_(True)
        b = p1.clone().requires_grad_(True)
        groups = [dict({"params": [a], "lr": BASE_LR}, **extra.get("base", {})),
                  dict({"params": [b], "lr": NEW_LR}, **extra.get("new", {}))]
        opt = make(groups)
        trace0, trace1 = [], []
        for step in range(STEPS):
            a.grad = g0[step].clone() if has_grad[step, 0] else None
            b.grad = g1[step].clone() if has_grad[step, 1] else None
            opt.step()
            trace0.append(a.detach().clone())
            trace1.append(b.detach().clone())
        out[f"{name}.p0"] = torch.stack(trace0)
        out[f"{name}.p1"] = torch.stack(trace1)
    write("optim", out)


SCHEDULE_STEPS = 12
PLATEAU_MIN_METRICS = [1.0, 0.9, 0.95, 0.899, 0.85, 0.86, 0.87, 0.86, 0.9, 0.7, 0.71, 0.72]
PLATEAU_MAX_METRICS = [0.5, 0.6, 0.6, 0.6, 0.65, 0.66, 0.64, 0.63, 0.62, 0.61, 0.7, 0.69]


def schedule_configs():
    return {
        "step": lambda o: lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
        "exponential": lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9),
        "poly": lambda o: lr_scheduler.PolynomialLR(o, total_iters=10, power=0.9),
        "cosine": lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=8, eta_min=1e-4),
        "plateau_min": lambda o: lr_scheduler.ReduceLROnPlateau(
            o, mode="min", factor=0.5, patience=1, threshold=1e-2, cooldown=1, min_lr=0.004),
        "plateau_max": lambda o: lr_scheduler.ReduceLROnPlateau(
            o, mode="max", factor=0.1, patience=2, threshold=0.02, threshold_mode="abs"),
    }


def closed_form(name, base, epoch):
    """The formulas med3d implements, to check they agree with torch's recursive updates."""
    if name == "step":
        return base * 0.5 ** (epoch // 3)
    if name == "exponential":
        return base * 0.9 ** epoch
    if name == "poly":
        return base * (1.0 - min(10, epoch) / 10) ** 0.9
    if name == "cosine":
        return 1e-4 + (base - 1e-4) * (1 + math.cos(math.pi * epoch / 8)) / 2
    return None


def generate_schedules(write):
    out = {"plateau_min.metrics": torch.tensor(PLATEAU_MIN_METRICS, dtype=torch.float64),
           "plateau_max.metrics": torch.tensor(PLATEAU_MAX_METRICS, dtype=torch.float64)}
    for name, make in schedule_configs().items():
        params = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
        opt = torch.optim.SGD([{"params": [params[0]], "lr": BASE_LR},
                               {"params": [params[1]], "lr": NEW_LR}], lr=0.1)
        schedule = make(opt)
        lrs = [[g["lr"] for g in opt.param_groups]]
        metrics = PLATEAU_MIN_METRICS if name == "plateau_min" else PLATEAU_MAX_METRICS
        for epoch in range(SCHEDULE_STEPS):
            opt.step()
            if name.startswith("plateau"):
                schedule.step(metrics[epoch])
            else:
                schedule.step()
            lrs.append([g["lr"] for g in opt.param_groups])
            for g, base in enumerate((BASE_LR, NEW_LR)):
                expected = closed_form(name, base, epoch + 1)
                if expected is not None:
                    assert abs(lrs[-1][g] - expected) <= 1e-12 * base, (name, epoch, g)
        out[f"{name}.lrs"] = torch.tensor(lrs, dtype=torch.float64)
    write("lr_schedule", out)


def generate(write):
    generate_optim(write)
    generate_schedules(write)
