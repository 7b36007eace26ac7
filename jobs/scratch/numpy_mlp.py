"""A multi-layer perceptron in pure NumPy: matrix operations only, no loops over samples or units.

Each module caches what its backward needs in forward. Shapes: x (N, D), labels one-hot (N, K).
"""
from __future__ import annotations

import time

import numpy as np


INITS = ("normal", "he")


class Linear:
    def __init__(self, in_features: int, out_features: int, rng: np.random.Generator, dtype=np.float32,
                 init: str = "he", weight_std: float = 1e-4):
        # normal: N(0, weight_std^2), the practical's template (1e-4); he: N(0, 2 / fan_in), Kaiming
        # init, for a layer that feeds an ELU (ReLU-like for x > 0). Biases start at zero either way.
        if init not in INITS:
            raise ValueError(f"init: got {init!r}; valid choices: {', '.join(INITS)}")
        std = weight_std if init == "normal" else np.sqrt(2 / in_features)
        weight = rng.normal(0, std, (in_features, out_features))
        self.params = {"weight": weight.astype(dtype), "bias": np.zeros(out_features, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):                      # (N, in) -> (N, out)
        self.x = x
        return x @ self.params["weight"] + self.params["bias"]

    def backward(self, dout):                  # (N, out) -> (N, in)
        self.grads["weight"] = self.x.T @ dout
        self.grads["bias"] = dout.sum(0)
        return dout @ self.params["weight"].T


class ELU:
    def __init__(self, alpha: float = 1.0):
        self.alpha = alpha

    def forward(self, x):
        self.x = x
        self.out = np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0)))
        return self.out

    def backward(self, dout):                  # d/dx ELU = 1 (x > 0) or out + alpha (x <= 0)
        return dout * np.where(self.x > 0, 1.0, self.out + self.alpha)


class SoftMax:
    def forward(self, x):
        shifted = x - x.max(1, keepdims=True)  # max trick: exp never overflows
        e = np.exp(shifted)
        self.out = e / e.sum(1, keepdims=True)
        return self.out

    def backward(self, dout):                  # Jacobian-vector product without the (K, K) Jacobian
        return self.out * (dout - (dout * self.out).sum(1, keepdims=True))


class CrossEntropy:
    """Mean over the batch of -sum(y * log p), for probabilities p and one-hot y."""
    eps = 1e-12

    def forward(self, probs, onehot):
        return float(-(onehot * np.log(probs + self.eps)).sum(1).mean())

    def backward(self, probs, onehot):
        return -onehot / (probs + self.eps) / len(onehot)


class MLP:
    def __init__(self, n_inputs: int, n_hidden: list[int], n_classes: int, seed: int = 0, dtype=np.float32,
                 init: str = "he", weight_std: float = 1e-4):
        rng = np.random.default_rng(seed)
        sizes = [n_inputs, *n_hidden, n_classes]
        self.layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.layers.append(Linear(a, b, rng, dtype, init, weight_std))
            self.layers.append(ELU() if i < len(sizes) - 2 else SoftMax())

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def linear_layers(self) -> list[Linear]:
        return [layer for layer in self.layers if isinstance(layer, Linear)]

    def sgd_step(self, lr: float) -> None:
        for layer in self.linear_layers():
            for k in layer.params:
                layer.params[k] -= lr * layer.grads[k]


def parse_hidden(spec: str) -> list[int]:
    """'100' -> [100]; '512,256' -> [512, 256]; '' -> [] (softmax regression)."""
    return [int(s) for s in spec.split(",") if s.strip()]


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean())


def train_mlp(mlp: MLP, data: dict[str, np.ndarray], learning_rate: float, max_steps: int, batch_size: int,
              eval_freq: int, seed: int, log, progress=None) -> list[dict]:
    """Mini-batch SGD; every eval_freq steps (and at the end) loss and accuracy on the test set.
    Batches are consecutive slices of a shuffled pass, reshuffled when a pass runs out, as the
    practical's DataSet.next_batch draws them (no image twice before all were seen once)."""
    rng = np.random.default_rng(seed)
    x, y = data["x_train"], data["y_train"]
    n_classes = mlp.linear_layers()[-1].params["bias"].shape[0]
    eye = np.eye(n_classes, dtype=x.dtype)
    loss_fn, history, started = CrossEntropy(), [], time.perf_counter()
    order = np.empty(0, dtype=np.int64)
    progress = progress or (lambda *a, **k: None)     # (done, of, unit, **numbers), throttled by its owner
    progress(0, max_steps, unit="step")
    for step in range(1, max_steps + 1):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(len(y))])
        idx, order = order[:batch_size], order[batch_size:]
        probs = mlp.forward(x[idx])
        loss = loss_fn.forward(probs, eye[y[idx]])
        mlp.backward(loss_fn.backward(probs, eye[y[idx]]))
        mlp.sgd_step(learning_rate)
        progress(step, max_steps, unit="step", train_loss=float(loss),
                 images_per_s=step * batch_size / (time.perf_counter() - started))
        if step % eval_freq == 0 or step == max_steps:
            test_probs = mlp.forward(data["x_test"])
            entry = {"step": step, "train_loss": loss, "train_acc": accuracy(probs, y[idx]),
                     "test_loss": loss_fn.forward(test_probs, eye[data["y_test"]]),
                     "test_acc": accuracy(test_probs, data["y_test"]),
                     "seconds": time.perf_counter() - started}
            history.append(entry)
            progress(step, max_steps, unit="step", test_acc=entry["test_acc"])
            log.info("Step %d/%d | Train Loss: %.4f | Train Acc: %.2f%% | Test Loss: %.4f | Test Acc: %.2f%%",
                     step, max_steps, loss, 100 * entry["train_acc"], entry["test_loss"], 100 * entry["test_acc"])
    return history
