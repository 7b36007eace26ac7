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


IMPLEMENTATIONS = {"torch.nn.LayerNorm": nn.LayerNorm, "LayerNormAutograd": LayerNormAutograd,
                   "LayerNormManual": LayerNormManual}


def compare_layernorms(rows: int = 256, features: int = 512, seed: int = 0, repeats: int = 20) -> list[dict]:
    """The three LayerNorms on the same input, gamma, beta and upstream gradient: each one's largest
    absolute difference from torch.nn.LayerNorm in the output and the three gradients (float32 and
    float64), float64 gradcheck of the two of ours, and the median forward + backward time."""
    import statistics
    import time

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=gen, dtype=torch.float64) * 3 + 1
    gamma, beta = torch.randn(features, generator=gen, dtype=torch.float64), torch.randn(features, generator=gen,
                                                                                       dtype=torch.float64)
    grad_out = torch.randn(rows, features, generator=gen, dtype=torch.float64)

    def run(name: str, dtype: torch.dtype) -> tuple[nn.Module, list[torch.Tensor]]:
        ln = IMPLEMENTATIONS[name](features).to(dtype)
        params = [ln.weight, ln.bias] if isinstance(ln, nn.LayerNorm) else [ln.gamma, ln.beta]
        with torch.no_grad():
            params[0].copy_(gamma)
            params[1].copy_(beta)
        xi = x.to(dtype).clone().requires_grad_(True)
        out = ln(xi)
        out.backward(grad_out.to(dtype))
        return ln, [out.detach(), xi.grad, params[0].grad, params[1].grad]

    reference = {dtype: run("torch.nn.LayerNorm", dtype)[1] for dtype in (torch.float32, torch.float64)}
    ours = run("LayerNormAutograd", torch.float64)[1]             # the two of ours compared with each other
    table = []
    for name in IMPLEMENTATIONS:
        row = {"implementation": name}
        for dtype, tag in ((torch.float32, "fp32"), (torch.float64, "fp64")):
            ln, got = run(name, dtype)
            diffs = [(a - b).abs().max().item() for a, b in zip(got, reference[dtype])]
            row.update({f"max_diff_{what}_{tag}": d for what, d in zip(("out", "grad_x", "grad_gamma", "grad_beta"),
                                                                       diffs)})
        row["max_diff_vs_autograd_fp64"] = max((a - b).abs().max().item()
                                               for a, b in zip(run(name, torch.float64)[1], ours))
        small = IMPLEMENTATIONS[name]((3, 4)).double()
        probe = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
        row["gradcheck_fp64"] = bool(torch.autograd.gradcheck(small, (probe,)))
        ln = IMPLEMENTATIONS[name](features)
        xi, g = x.float().clone().requires_grad_(True), grad_out.float()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            ln(xi).backward(g)
            times.append(time.perf_counter() - started)
        row["fwd_bwd_ms"] = round(1000 * statistics.median(times), 3)
        table.append(row)
    return table
