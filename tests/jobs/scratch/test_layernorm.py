"""LayerNorm with autograd and with a hand-written backward: both equal F.layer_norm."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jobs.scratch.layernorm import LayerNormAutograd, LayerNormFunction, LayerNormManual


@pytest.mark.parametrize("cls", [LayerNormAutograd, LayerNormManual])
@pytest.mark.parametrize("shape, normalized", [((4, 8), 8), ((2, 3, 5), (5,)), ((2, 3, 4, 5), (4, 5)), ((1, 7), 7)])
def test_equals_functional_layer_norm(cls, shape, normalized):
    torch.manual_seed(0)
    ln = cls(normalized).double()
    with torch.no_grad():
        ln.gamma.normal_()
        ln.beta.normal_()
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    ref = F.layer_norm(x, ln.normalized_shape, ln.gamma, ln.beta, ln.eps)
    assert (ln(x) - ref).abs().max().item() < 1e-6
    assert (ln.float()(x.float()) - ref.float()).abs().max().item() < 1e-5


@pytest.mark.parametrize("cls", [LayerNormAutograd, LayerNormManual])
def test_gradcheck_float64(cls):
    torch.manual_seed(0)
    ln = cls((3, 4)).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    if cls is LayerNormManual:
        assert torch.autograd.gradcheck(lambda a, g, b: LayerNormFunction.apply(a, g, b, 1e-5), (x, gamma, beta))
    assert torch.autograd.gradcheck(ln, (x,))


def test_manual_backward_matches_autograd_gradients():
    torch.manual_seed(0)
    x = torch.randn(5, 6, dtype=torch.float64)
    grads = []
    for cls in (LayerNormAutograd, LayerNormManual):
        ln = cls(6).double()
        xi = x.clone().requires_grad_()
        (ln(xi) * torch.arange(6.0, dtype=torch.float64)).sum().backward()
        grads.append((xi.grad, ln.gamma.grad, ln.beta.grad))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-10)


def test_saves_only_what_backward_needs_and_skips_unneeded_grads():
    x = torch.randn(3, 4, requires_grad=True)
    gamma, beta = torch.ones(4), torch.zeros(4)          # no grad wanted for these
    y = LayerNormFunction.apply(x, gamma, beta, 1e-5)
    assert len(y.grad_fn.saved_tensors) == 3             # xhat, 1/std, gamma
    y.sum().backward()
    assert x.grad is not None and gamma.grad is None and beta.grad is None
    frozen_x = torch.randn(3, 4)
    g = torch.ones(4, requires_grad=True)
    LayerNormFunction.apply(frozen_x, g, torch.zeros(4), 1e-5).pow(2).sum().backward()
    assert g.grad is not None and frozen_x.grad is None


@pytest.mark.parametrize("cls", [LayerNormAutograd, LayerNormManual])
def test_shape_check_has_clear_error(cls):
    with pytest.raises(ValueError, match=r"LayerNorm over \[8\] needs input whose last 1 dimension\(s\) are \[8\]; got shape \[2, 7\]"):
        cls(8)(torch.randn(2, 7))


def test_function_eps_defaults_to_layer_norm_default():
    """`LayerNormFunction.apply(x, gamma, beta)` uses eps=1e-5, as nn.LayerNorm; forward and
    backward agree with F.layer_norm and with an explicit eps=1e-5 (apply takes no keywords)."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(6, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(6, dtype=torch.float64, requires_grad=True)
    y3 = LayerNormFunction.apply(x, gamma, beta)
    y4 = LayerNormFunction.apply(x, gamma, beta, 1e-5)
    ref = F.layer_norm(x, (6,), gamma, beta, 1e-5)
    assert torch.equal(y3, y4)
    assert (y3 - ref).abs().max().item() < 1e-12
    grads3 = torch.autograd.grad(y3.pow(2).sum(), (x, gamma, beta))
    grads_ref = torch.autograd.grad(ref.pow(2).sum(), (x, gamma, beta))
    for a, b in zip(grads3, grads_ref):
        assert torch.allclose(a, b, atol=1e-10)
    assert torch.autograd.gradcheck(LayerNormFunction.apply, (x, gamma, beta))
    # a different eps still reaches forward positionally, and changes the result
    small_var = torch.full((2, 6), 3.0, dtype=torch.float64) + torch.arange(6) * 1e-3
    assert not torch.allclose(LayerNormFunction.apply(small_var, gamma, beta),
                              LayerNormFunction.apply(small_var, gamma, beta, 1e-1))
