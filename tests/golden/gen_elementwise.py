"""Golden fixtures for the element-wise ops and reductions."""
import torch


def generate(write):
    a = torch.randn(2, 3, 5, 7, 6, requires_grad=True)
    b = torch.randn(2, 3, 5, 7, 6, requires_grad=True)
    w = torch.randn(2, 3, 5, 7, 6)
    # One graph touching every op; w weights the output so every gradient is non-trivial.
    y = (torch.relu(a) + torch.sigmoid(b)) * a - b * 2.0 + 0.5
    loss = (y * w).sum() + y.mean()
    loss.backward()
    write("elementwise", {"a": a, "b": b, "w": w, "y": y, "loss": loss.reshape(1),
                          "da": a.grad, "db": b.grad})
