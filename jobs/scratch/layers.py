"""A CNN stack whose gradients are written by hand: every backward sits next to its forward.

Parameters are plain tensors with requires_grad=False and training runs under torch.no_grad(),
so nothing can pass through autograd by accident. Convolution is im2col + one matmul forward;
the input gradient is the transposed matmul folded back (col2im).
"""
from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F


class Param:
    """A tensor and its gradient; never tracked by autograd."""

    def __init__(self, data: torch.Tensor):
        self.data = data.detach().requires_grad_(False)
        self.grad = torch.zeros_like(self.data)


class Module(abc.ABC):
    def parameters(self) -> list[Param]:
        return []

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the output; keep what backward needs."""

    @abc.abstractmethod
    def backward(self, grad_out: torch.Tensor) -> torch.Tensor:
        """Accumulate parameter gradients; return the gradient with respect to the input."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


class Linear(Module):
    def __init__(self, in_features: int, out_features: int, generator: torch.Generator | None = None,
                 dtype=torch.float32):
        bound = 1 / math.sqrt(in_features)  # torch.nn.Linear's default init range
        self.weight = Param((torch.rand(out_features, in_features, generator=generator, dtype=dtype) * 2 - 1) * bound)
        self.bias = Param((torch.rand(out_features, generator=generator, dtype=dtype) * 2 - 1) * bound)

    def parameters(self):
        return [self.weight, self.bias]

    def forward(self, x):                      # (N, in) -> (N, out)
        self.x = x
        return torch.addmm(self.bias.data, x, self.weight.data.t())

    def backward(self, g):                     # g: (N, out)
        self.weight.grad += g.t() @ self.x     # (out, in)
        self.bias.grad += g.sum(0)
        return g @ self.weight.data            # (N, in)


class Conv2D(Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 generator: torch.Generator | None = None, dtype=torch.float32):
        self.k, self.stride, self.padding = kernel_size, stride, padding
        fan_in = in_channels * kernel_size * kernel_size
        bound = 1 / math.sqrt(fan_in)          # torch.nn.Conv2d's default init range
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = Param((torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound)
        self.bias = Param((torch.rand(out_channels, generator=generator, dtype=dtype) * 2 - 1) * bound)

    def parameters(self):
        return [self.weight, self.bias]

    def _out_size(self, size: int) -> int:
        return (size + 2 * self.padding - self.k) // self.stride + 1

    def _windows(self, size_out: tuple[int, int]):
        """For each kernel offset (i, j): the strided slice of the padded input it multiplies."""
        ho, wo = size_out
        s = self.stride
        for i in range(self.k):
            for j in range(self.k):
                yield (slice(None), slice(None), slice(i, i + s * (ho - 1) + 1, s), slice(j, j + s * (wo - 1) + 1, s))

    def _im2col(self, padded: torch.Tensor, out_hw) -> torch.Tensor:
        """(n, C, Hp, Wp) -> (n, C*k*k, L): k*k strided views stacked, rows ordered (C, ki, kj)
        as F.unfold orders them (and faster than unfold on CPU)."""
        cols = torch.stack([padded[win] for win in self._windows(out_hw)], 2)       # (n, C, k*k, Ho, Wo)
        return cols.view(padded.shape[0], -1, out_hw[0] * out_hw[1])

    def _chunks(self, n: int, rows: int, length: int):
        # Work on a few samples at a time (~4 MB of columns) so the (C*k*k, L) blocks stay in
        # cache: on 2 CPU cores the batch-64 conv went from ~80 ms to ~50 ms for forward+backward
        # against one batched matmul over all N (benchmarks/scratch_bench.py). Columns are
        # recomputed in backward instead of stored, which also saves N*C*k*k*L floats.
        step = max(1, (1 << 20) // (rows * length))
        return [slice(i, i + step) for i in range(0, n, step)]

    def forward(self, x):                      # (N, C, H, W) -> (N, O, Ho, Wo)
        n, _, h, w = x.shape
        out_hw = (self._out_size(h), self._out_size(w))
        self.padded = F.pad(x, [self.padding] * 4) if self.padding else x
        w_mat = self.weight.data.flatten(1)                                          # (O, C*k*k)
        out = torch.empty(n, w_mat.shape[0], out_hw[0] * out_hw[1], dtype=x.dtype, device=x.device)
        for part in self._chunks(n, w_mat.shape[1], out.shape[-1]):
            torch.matmul(w_mat, self._im2col(self.padded[part], out_hw), out=out[part])  # (n, O, L)
        out += self.bias.data[:, None]
        return out.view(n, -1, *out_hw)

    def backward(self, g):                     # g: (N, O, Ho, Wo)
        n, c, hp, wp = self.padded.shape
        out_hw = g.shape[-2:]
        g = g.flatten(2)                                                             # (N, O, L)
        w_mat = self.weight.data.flatten(1)                                          # (O, C*k*k)
        w_t = w_mat.t().contiguous()
        dx = torch.zeros(n, c, hp, wp, dtype=g.dtype, device=g.device)
        for part in self._chunks(n, w_mat.shape[1], g.shape[-1]):
            cols = self._im2col(self.padded[part], out_hw)                          # (n, C*k*k, L)
            self.weight.grad += (g[part] @ cols.transpose(1, 2)).sum(0).view_as(self.weight.data)
            dcols = (w_t @ g[part]).view(-1, c, self.k * self.k, *out_hw)            # (n, C, k*k, Ho, Wo)
            # col2im: add each offset's gradient back where that offset read the input.
            dx_part = dx[part]
            for offset, win in enumerate(self._windows(out_hw)):
                dx_part[win] += dcols[:, :, offset]
        self.bias.grad += g.sum((0, 2))
        p = self.padding
        return dx[:, :, p:hp - p, p:wp - p] if p else dx                            # (N, C, H, W)


class MaxPool2D(Module):
    """Backward routes each window's gradient to its argmax; ties go to the first (top-left) one."""

    def __init__(self, kernel_size: int, stride: int | None = None):
        self.k, self.stride = kernel_size, stride or kernel_size

    def forward(self, x):                      # (N, C, H, W) -> (N, C, Ho, Wo)
        n, c, h, w = x.shape
        self.shape = x.shape
        cols = F.unfold(x.reshape(n * c, 1, h, w), self.k, stride=self.stride)     # (N*C, k*k, L)
        out, self.argmax = cols.max(1, keepdim=True)   # first index among equal maxima (torch.max)
        ho, wo = (h - self.k) // self.stride + 1, (w - self.k) // self.stride + 1
        return out.view(n, c, ho, wo)

    def backward(self, g):
        n, c, h, w = self.shape
        flat = g.reshape(n * c, 1, -1)                                               # (N*C, 1, L)
        dcols = torch.zeros(n * c, self.k * self.k, flat.shape[-1], dtype=g.dtype, device=g.device)
        dcols.scatter_(1, self.argmax, flat)
        return F.fold(dcols, (h, w), self.k, stride=self.stride).view(n, c, h, w)


class ReLU(Module):
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, g):
        return g * self.mask


class Flatten(Module):
    def forward(self, x):                      # (N, ...) -> (N, D)
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, g):
        return g.reshape(self.shape)


class CrossEntropy:
    """Mean cross-entropy from logits, via a numerically stable log-softmax."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:   # (N, K), (N,)
        shifted = logits - logits.max(1, keepdim=True).values
        log_probs = shifted - shifted.exp().sum(1, keepdim=True).log()
        self.probs, self.target = log_probs.exp(), target
        return -log_probs.gather(1, target[:, None]).mean()

    __call__ = forward

    def backward(self) -> torch.Tensor:        # d loss / d logits: (softmax - onehot) / N
        g = self.probs.clone()
        g[torch.arange(len(self.target)), self.target] -= 1
        return g / len(self.target)


class Sequential(Module):
    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, g):
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g


class SGD:
    """SGD with momentum and L2 weight decay, as torch.optim.SGD computes it."""

    def __init__(self, params: list[Param], lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params, self.lr, self.momentum, self.weight_decay = params, lr, momentum, weight_decay
        self.velocity = [torch.zeros_like(p.data) for p in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad.zero_()

    def step(self) -> None:
        for p, v in zip(self.params, self.velocity):
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            if self.momentum:
                v.mul_(self.momentum).add_(g)
                g = v
            p.data.sub_(self.lr * g)


def scratch_cnn(image_size: int, num_classes: int = 10, channels: tuple[int, int] = (16, 32),
                hidden: int = 128, seed: int = 0) -> Sequential:
    """conv3x3-relu-pool2, conv3x3-relu-pool2, then a 2-layer head. 28 px -> 7x7, 8 px -> 2x2."""
    gen = torch.Generator().manual_seed(seed)
    c1, c2 = channels
    side = image_size // 4
    return Sequential(
        Conv2D(1, c1, 3, padding=1, generator=gen), ReLU(), MaxPool2D(2),       # (N, c1, H/2, W/2)
        Conv2D(c1, c2, 3, padding=1, generator=gen), ReLU(), MaxPool2D(2),      # (N, c2, H/4, W/4)
        Flatten(), Linear(c2 * side * side, hidden, generator=gen), ReLU(),
        Linear(hidden, num_classes, generator=gen),
    )


@torch.no_grad()
def evaluate_scratch(model: Sequential, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> dict:
    loss_fn, total, correct = CrossEntropy(), 0.0, 0
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model.forward(xb)
        total += loss_fn(logits, yb).item() * len(yb)
        correct += (logits.argmax(1) == yb).sum().item()
    return {"loss": total / len(y), "acc": correct / len(y)}


@torch.no_grad()
def train_scratch(model: Sequential, data: dict[str, torch.Tensor], epochs: int, batch_size: int, lr: float,
                  momentum: float, weight_decay: float, seed: int, log, progress=None) -> list[dict]:
    """Mini-batch SGD with hand-written gradients; float inputs (N, 1, H, W), int64 labels.
    `progress(done, of, unit, **numbers)` hears of every step (it throttles its own writes)."""
    import time
    opt = SGD(model.parameters(), lr, momentum, weight_decay)
    loss_fn = CrossEntropy()
    gen = torch.Generator().manual_seed(seed)
    x, y = data["x_train"], data["y_train"]
    history = []
    progress = progress or (lambda *a, **k: None)
    progress(0, epochs, "epoch")
    for epoch in range(1, epochs + 1):
        started, total, correct, seen = time.perf_counter(), 0.0, 0, 0
        for idx in torch.randperm(len(y), generator=gen).split(batch_size):
            logits = model.forward(x[idx])
            loss = loss_fn(logits, y[idx])
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
            seen += len(idx)
            progress(epoch - 1 + seen / len(y), epochs, "epoch", train_loss=total / seen,
                     images_per_s=seen / (time.perf_counter() - started))
        seconds = time.perf_counter() - started
        val = evaluate_scratch(model, data["x_val"], data["y_val"])
        history.append({"epoch": epoch, "train_loss": total / len(y), "train_acc": correct / len(y),
                        "val_loss": val["loss"], "val_acc": val["acc"], "seconds": seconds,
                        "img_per_s": len(y) / seconds})
        progress(epoch, epochs, "epoch", train_loss=total / len(y), val_acc=val["acc"],
                 images_per_s=len(y) / seconds)
        log.info("Epoch %d/%d | Train Loss: %.4f | Train Acc: %.2f%% | Val Loss: %.4f | Val Acc: %.2f%% | %.0f img/s",
                 epoch, epochs, total / len(y), 100 * correct / len(y), val["loss"], 100 * val["acc"],
                 len(y) / seconds)
    return history
