"""The no-autograd CNN stack, tested like a numerical library: float64 central differences against
the hand-written backward, and the same computation through torch's own ops under autograd."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jobs.scratch import layers as L
from tests.support.gradients import numeric_grad, rel_error

TOL = 1e-7          # relative error, float64 central differences with eps = 1e-6


def check_layer(layer: L.Module, x: torch.Tensor) -> None:
    """Analytic input and parameter gradients of sum(layer(x) * G) vs central differences."""
    gen = torch.Generator().manual_seed(1)
    upstream = torch.randn(layer.forward(x).shape, generator=gen, dtype=torch.float64)

    def f():
        return (layer.forward(x) * upstream).sum().item()
    for p in layer.parameters():
        p.grad.zero_()
    layer.forward(x)
    dx = layer.backward(upstream)
    assert rel_error(dx, numeric_grad(f, x)) < TOL
    for p in layer.parameters():
        analytic = p.grad.clone()
        assert rel_error(analytic, numeric_grad(f, p.data)) < TOL


def f64(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("n, c, h, w, o, k, stride, padding", [
    (2, 3, 5, 5, 4, 3, 1, 0), (2, 3, 6, 6, 4, 3, 2, 1), (1, 2, 7, 5, 3, 3, 1, 1), (3, 1, 5, 7, 2, 2, 2, 0),
    (1, 1, 4, 4, 1, 1, 1, 0),
])
def test_conv2d_gradients_and_torch_parity(n, c, h, w, o, k, stride, padding):
    conv = L.Conv2D(c, o, k, stride, padding, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = f64(n, c, h, w)
    check_layer(conv, x)
    # Same forward/backward through torch under autograd.
    xt = x.clone().requires_grad_()
    wt, bt = conv.weight.data.clone().requires_grad_(), conv.bias.data.clone().requires_grad_()
    ref = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    out = conv.forward(x)
    assert out.shape == ref.shape == (n, o, (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1)
    assert torch.allclose(out, ref, atol=1e-12)
    g = f64(*ref.shape, seed=3)
    ref.backward(g)
    for p in conv.parameters():
        p.grad.zero_()
    dx = conv.backward(g)
    assert torch.allclose(dx, xt.grad, atol=1e-12)
    assert torch.allclose(conv.weight.grad, wt.grad, atol=1e-12)
    assert torch.allclose(conv.bias.grad, bt.grad, atol=1e-12)


@pytest.mark.parametrize("n, i, o", [(1, 3, 2), (4, 5, 3), (7, 1, 6)])
def test_linear_gradients_and_torch_parity(n, i, o):
    lin = L.Linear(i, o, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = f64(n, i)
    check_layer(lin, x)
    assert torch.allclose(lin.forward(x), F.linear(x, lin.weight.data, lin.bias.data), atol=1e-12)


@pytest.mark.parametrize("shape, k, stride", [((2, 3, 4, 4), 2, 2), ((1, 2, 5, 5), 2, 2), ((2, 1, 5, 6), 3, 1),
                                              ((1, 1, 7, 7), 3, 2)])
def test_maxpool_gradients_and_torch_parity(shape, k, stride):
    pool = L.MaxPool2D(k, stride)
    x = f64(*shape)
    check_layer(pool, x)
    xt = x.clone().requires_grad_()
    ref = F.max_pool2d(xt, k, stride)
    assert torch.equal(pool.forward(x), ref)
    g = f64(*ref.shape, seed=5)
    ref.backward(g)
    assert torch.allclose(pool.backward(g), xt.grad, atol=1e-12)


def test_maxpool_ties_go_to_first_element_of_each_window():
    pool = L.MaxPool2D(2)
    x = torch.ones(1, 1, 4, 4)
    pool.forward(x)
    grad = pool.backward(torch.arange(1.0, 5.0).view(1, 1, 2, 2))
    expected = torch.tensor([[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(grad[0, 0], expected)


def test_relu_and_flatten():
    x = f64(3, 2, 3, 3)
    check_layer(L.ReLU(), x)
    check_layer(L.Flatten(), x)
    assert L.Flatten().forward(x).shape == (3, 18)
    assert torch.equal(L.ReLU().forward(x), F.relu(x))


@pytest.mark.parametrize("n, k", [(1, 3), (5, 10), (8, 2)])
def test_cross_entropy_matches_torch_and_numeric(n, k):
    logits = f64(n, k)
    target = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(2))
    ce = L.CrossEntropy()
    ref_logits = logits.clone().requires_grad_()
    ref = F.cross_entropy(ref_logits, target)
    assert abs(ce(logits, target).item() - ref.item()) < 1e-12
    ref.backward()
    analytic = ce.backward()
    assert torch.allclose(analytic, ref_logits.grad, atol=1e-12)
    assert rel_error(analytic, numeric_grad(lambda: ce(logits, target).item(), logits)) < TOL


def test_cross_entropy_is_stable_for_huge_logits():
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [-5000.0, 5000.0, 0.0]])
    loss = L.CrossEntropy()(logits, torch.tensor([0, 0]))
    assert torch.isfinite(loss) and abs(loss.item() - 5000.0) < 1e-3


def test_sequential_gradient_through_whole_cnn():
    net = L.Sequential(L.Conv2D(1, 2, 3, padding=1, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                       L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                       L.Linear(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    check_layer(net, f64(2, 1, 4, 4))


def test_sgd_matches_torch_optim():
    gen = torch.Generator().manual_seed(0)
    p = L.Param(torch.randn(4, 3, generator=gen))
    ref = torch.nn.Parameter(p.data.clone())
    mine = L.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
    theirs = torch.optim.SGD([ref], lr=0.1, momentum=0.9, weight_decay=0.01)
    for step in range(5):
        g = torch.randn(4, 3, generator=gen)
        mine.zero_grad()
        p.grad += g
        mine.step()
        theirs.zero_grad()
        ref.grad = g.clone()
        theirs.step()
    assert torch.allclose(p.data, ref.detach(), atol=1e-6)


def test_no_autograd_anywhere(monkeypatch):
    """Parameters never require grad, and the training loop runs with autograd switched off."""
    seen = []
    original = L.ReLU.forward
    monkeypatch.setattr(L.ReLU, "forward", lambda self, x: (seen.append(torch.is_grad_enabled()), original(self, x))[1])
    model = L.scratch_cnn(8, seed=0)
    data = {k: v for k, v in _digits().items()}
    calls = []
    history = L.train_scratch(model, data, 1, 64, 0.05, 0.9, 0.0, 0, _Log(),
                              lambda done, of, unit, **n: calls.append((done, of, unit, n)))
    assert seen and not any(seen)
    # progress: from 0 to 1 epoch step by step, then the epoch's val accuracy
    assert calls[0] == (0, 1, "epoch", {}) and calls[-1][0] == 1 and calls[-1][3]["val_acc"] == history[0]["val_acc"]
    assert [c[0] for c in calls] == sorted(c[0] for c in calls) and len(calls) > 3
    assert all(not p.data.requires_grad and p.data.grad_fn is None for p in model.parameters())


class _Log:
    def info(self, *args):
        pass


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16           # (N, 1, 8, 8)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, va, te = perm[:1200], perm[1200:1450], perm[1450:]
    return {"x_train": x[tr], "y_train": y[tr], "x_val": x[va], "y_val": y[va], "x_test": x[te], "y_test": y[te]}


def test_scratch_cnn_drives_loss_down_on_a_small_batch():
    data = _digits()
    model, loss_fn = L.scratch_cnn(8, seed=0), L.CrossEntropy()
    opt = L.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xb, yb = data["x_train"][:64], data["y_train"][:64]
    with torch.no_grad():
        first = loss_fn(model.forward(xb), yb).item()
        for _ in range(60):
            loss_fn(model.forward(xb), yb)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
        last = loss_fn(model.forward(xb), yb).item()
    assert last < first / 20


def test_scratch_cnn_reaches_95_percent_on_digits():
    data = _digits()
    model = L.scratch_cnn(8, seed=0)
    L.train_scratch(model, data, 15, 32, 0.05, 0.9, 1e-4, 0, _Log())
    assert L.evaluate_scratch(model, data["x_test"], data["y_test"])["acc"] >= 0.95
