"""The NumPy MLP: each module's backward against float64 central differences and torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from jobs.scratch import numpy_mlp as M
from tests.support.gradients import numeric_grad, rel_error

TOL = 1e-6


def check_module(module, x: np.ndarray, params: dict | None = None, grads: dict | None = None):
    upstream = np.random.default_rng(1).normal(size=module.forward(x).shape)

    def f():
        return float((module.forward(x) * upstream).sum())
    module.forward(x)
    dx = module.backward(upstream)
    assert rel_error(dx, numeric_grad(f, x)) < TOL
    for k in params or {}:
        analytic = grads[k].copy()
        assert rel_error(analytic, numeric_grad(f, params[k])) < TOL


@pytest.mark.parametrize("n, i, o", [(1, 4, 3), (6, 5, 2), (3, 1, 7)])
def test_linear(n, i, o):
    lin = M.Linear(i, o, np.random.default_rng(0), dtype=np.float64)
    lin.params["bias"] += np.random.default_rng(3).normal(size=o)
    x = np.random.default_rng(2).normal(size=(n, i))
    check_module(lin, x, lin.params, lin.grads)
    ref = torch.nn.functional.linear(torch.tensor(x), torch.tensor(lin.params["weight"].T), torch.tensor(lin.params["bias"]))
    assert np.allclose(lin.forward(x), ref.numpy())


def test_elu_matches_torch_and_numeric():
    x = np.random.default_rng(0).normal(size=(4, 6)) * 3
    elu = M.ELU()
    check_module(elu, x)
    assert np.allclose(elu.forward(x), torch.nn.functional.elu(torch.tensor(x)).numpy())


def test_softmax_matches_torch_and_numeric_and_is_stable():
    x = np.random.default_rng(0).normal(size=(3, 5))
    sm = M.SoftMax()
    check_module(sm, x)
    assert np.allclose(sm.forward(x), torch.softmax(torch.tensor(x), 1).numpy())
    big = sm.forward(np.array([[1000.0, 0.0, -1000.0]]))
    assert np.all(np.isfinite(big)) and abs(big[0, 0] - 1) < 1e-12


def test_cross_entropy_gradient():
    rng = np.random.default_rng(0)
    probs = M.SoftMax().forward(rng.normal(size=(4, 3)))
    onehot = np.eye(3)[[0, 2, 1, 1]]
    ce = M.CrossEntropy()
    analytic = ce.backward(probs, onehot)
    assert rel_error(analytic, numeric_grad(lambda: ce.forward(probs, onehot), probs)) < TOL
    ref = torch.nn.functional.nll_loss(torch.log(torch.tensor(probs)), torch.tensor([0, 2, 1, 1]))
    assert abs(ce.forward(probs, onehot) - ref.item()) < 1e-9


def test_whole_mlp_gradient_and_torch_parity():
    mlp = M.MLP(5, [4, 3], 3, seed=0, dtype=np.float64)
    x = np.random.default_rng(1).normal(size=(6, 5))
    onehot = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    ce = M.CrossEntropy()
    probs = mlp.forward(x)
    mlp.backward(ce.backward(probs, onehot))
    # Same network in torch under autograd.
    lins = mlp.linear_layers()
    ws = [torch.tensor(layer.params["weight"], requires_grad=True) for layer in lins]
    bs = [torch.tensor(layer.params["bias"], requires_grad=True) for layer in lins]
    h = torch.tensor(x)
    for i, (w, b) in enumerate(zip(ws, bs)):
        h = h @ w + b
        h = torch.nn.functional.elu(h) if i < len(ws) - 1 else h
    loss = torch.nn.functional.cross_entropy(h, torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    assert abs(loss.item() - ce.forward(probs, onehot)) < 1e-9
    for layer, w, b in zip(lins, ws, bs):
        assert np.allclose(layer.grads["weight"], w.grad.numpy(), atol=1e-9)
        assert np.allclose(layer.grads["bias"], b.grad.numpy(), atol=1e-9)
    for layer in lins:                         # and against central differences
        for k in layer.params:
            analytic = layer.grads[k].copy()
            numeric = numeric_grad(lambda: ce.forward(mlp.forward(x), onehot), layer.params[k])
            assert rel_error(analytic, numeric) < TOL


def test_parse_hidden():
    assert M.parse_hidden("100") == [100] and M.parse_hidden("512,256") == [512, 256] and M.parse_hidden("") == []


def test_training_drives_loss_down():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 20)) * 2
    y = rng.integers(0, 4, 400)
    x = (centers[y] + rng.normal(size=(400, 20))).astype(np.float32)
    data = {"x_train": x[:300], "y_train": y[:300], "x_test": x[300:], "y_test": y[300:]}

    class Log:
        def info(self, *a):
            pass
    calls = []
    history = M.train_mlp(M.MLP(20, [32], 4, seed=0), data, 0.05, 300, 32, 50, 0, Log(),
                          progress=lambda done, of, unit, **n: calls.append((done, of, unit, n)))
    assert history[-1]["test_loss"] < history[0]["test_loss"] / 2
    assert history[-1]["test_acc"] > 0.9
    # progress: every step, with its loss; each evaluation's test accuracy as the history has it
    assert calls[0] == (0, 300, "step", {}) and [c[0] for c in calls if "train_loss" in c[3]] == list(range(1, 301))
    assert [c[3]["test_acc"] for c in calls if "test_acc" in c[3]] == [h["test_acc"] for h in history]
