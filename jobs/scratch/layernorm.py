"""LayerNorm twice: with autograd, and as a torch.autograd.Function with a hand-written backward."""
from __future__ import annotations

import torch
from torch import nn


def _check_shape(x: torch.Tensor, normalized_shape: tuple[int, ...]) -> None:
    if tuple(x.shape[-len(normalized_shape):]) != normalized_shape:
        raise ValueError(f"LayerNorm over {list(normalized_shape)} needs input whose last "
                         f"{len(normalized_shape)} dimension(s) are {list(normalized_shape)}; got shape {list(x.shape)}")


class LayerNormAutograd(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta over the last dims; autograd does backward."""

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(self.normalized_shape))
        self.beta = nn.Parameter(torch.zeros(self.normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_shape(x, self.normalized_shape)
        dims = tuple(range(-len(self.normalized_shape), 0))
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, unbiased=False, keepdim=True)   # biased, as F.layer_norm
        return (x - mean) / torch.sqrt(var + self.eps) * self.gamma + self.beta


class LayerNormFunction(torch.autograd.Function):
    """Saves only xhat, 1/std and gamma; skips gradients nobody asked for."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps: float = 1e-5):
        # eps has nn.LayerNorm's default, so `LayerNormFunction.apply(x, gamma, beta)` works;
        # apply() takes no keyword arguments: pass another eps as the fourth argument.
        dims = tuple(range(-gamma.dim(), 0))
        mean = x.mean(dims, keepdim=True)
        rstd = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
        xhat = (x - mean) * rstd
        ctx.save_for_backward(xhat, rstd, gamma)
        ctx.dims = dims
        return xhat * gamma + beta

    @staticmethod
    def backward(ctx, grad_out):
        xhat, rstd, gamma = ctx.saved_tensors
        dims = ctx.dims
        batch_dims = tuple(range(grad_out.dim() - len(dims)))
        grad_x = grad_gamma = grad_beta = None
        if ctx.needs_input_grad[0]:
            # d/dx of xhat*gamma: rstd * (g - mean(g) - xhat * mean(g * xhat)), g = grad_out * gamma
            g = grad_out * gamma
            grad_x = rstd * (g - g.mean(dims, keepdim=True) - xhat * (g * xhat).mean(dims, keepdim=True))
        if ctx.needs_input_grad[1]:
            grad_gamma = (grad_out * xhat).sum(batch_dims)
        if ctx.needs_input_grad[2]:
            grad_beta = grad_out.sum(batch_dims)
        # one gradient per input given to apply() (3, or 4 with eps, which gets None)
        return (grad_x, grad_gamma, grad_beta, None)[:len(ctx.needs_input_grad)]


class LayerNormManual(LayerNormAutograd):
    """Same parameters and checks as LayerNormAutograd; backward by LayerNormFunction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_shape(x, self.normalized_shape)
        return LayerNormFunction.apply(x, self.gamma, self.beta, self.eps)
