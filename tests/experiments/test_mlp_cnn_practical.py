"""The MLP/ConvNet practical's parts: the ConvNet against its layer table, the MLPs' update rule
against torch.optim.SGD, step-counted epochs, the mean-image preprocessing, the LayerNorm
comparison, and the pooled 80/10/10 split the CIFAR-10 levels use."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from jobs.data.splits import SplitPlan, split_arrays
from jobs.models.nets import MLP, PreActBlock, PreActVGG
from jobs.scratch import numpy_mlp as N
from jobs.scratch.layernorm import compare_layernorms
from jobs.training.loop import epoch_batches, make_optimizer
from jobs.training.params import TrainParams
from jobs.training.transforms import BatchTransform, mean_image

# The practical's table: (name, kind, kernel, stride, padding, in, out); preact = BN -> ReLU -> 3x3 conv + x.
TABLE = [("conv0", "conv", 3, 1, 1, 3, 64), ("preact1", "preact", 3, 1, 1, 64, 64),
         ("conv1", "conv", 1, 1, 0, 64, 128), ("maxpool1", "pool", 3, 2, 1, 128, 128),
         ("preact2_a", "preact", 3, 1, 1, 128, 128), ("preact2_b", "preact", 3, 1, 1, 128, 128),
         ("conv2", "conv", 1, 1, 0, 128, 256), ("maxpool2", "pool", 3, 2, 1, 256, 256),
         ("preact3_a", "preact", 3, 1, 1, 256, 256), ("preact3_b", "preact", 3, 1, 1, 256, 256),
         ("conv3", "conv", 1, 1, 0, 256, 512), ("maxpool3", "pool", 3, 2, 1, 512, 512),
         ("preact4_a", "preact", 3, 1, 1, 512, 512), ("preact4_b", "preact", 3, 1, 1, 512, 512),
         ("maxpool4", "pool", 3, 2, 1, 512, 512),
         ("preact5_a", "preact", 3, 1, 1, 512, 512), ("preact5_b", "preact", 3, 1, 1, 512, 512),
         ("maxpool5", "pool", 3, 2, 1, 512, 512), ("bn", "bn", 0, 0, 0, 512, 512), ("relu", "relu", 0, 0, 0, 512, 512)]


def table_params(num_classes: int = 10) -> int:
    """Parameters the table implies: conv k*k*in*out + out, BN 2C, linear 512*K + K."""
    total = 0
    for _, kind, k, _, _, cin, cout in TABLE:
        if kind == "conv":
            total += k * k * cin * cout + cout
        elif kind == "preact":
            total += 2 * cin + 9 * cin * cout + cout
        elif kind == "bn":
            total += 2 * cin
    return total + 512 * num_classes + num_classes


def test_preact_vgg_follows_the_layer_table():
    net = PreActVGG(10)
    layers = list(net.features.named_children())
    assert [name for name, _ in layers] == [row[0] for row in TABLE]
    for (name, module), (_, kind, k, stride, pad, cin, cout) in zip(layers, TABLE):
        if kind == "conv":
            assert isinstance(module, nn.Conv2d), name
            assert (module.kernel_size, module.stride, module.padding) == ((k, k), (stride, stride), (pad, pad)), name
            assert (module.in_channels, module.out_channels) == (cin, cout), name
        elif kind == "preact":
            assert isinstance(module, PreActBlock) and module.bn.num_features == cin, name
            assert list(dict(module.named_children())) == ["bn", "relu", "conv"]       # pre-activation order
            assert (module.conv.kernel_size, module.conv.padding, module.conv.out_channels) == ((3, 3), (1, 1), cout)
        elif kind == "pool":
            assert isinstance(module, nn.MaxPool2d) and (module.kernel_size, module.stride, module.padding) == (3, 2, 1)
    assert (net.head.in_features, net.head.out_features) == (512, 10)
    assert sum(q.numel() for q in net.parameters()) == table_params() == 11_138_122
    x = torch.randn(2, 3, 32, 32)
    assert net.features(x).shape == (2, 512, 1, 1)          # five 3x3/2/1 maxpools: 32 -> 16 -> 8 -> 4 -> 2 -> 1
    block = net.features.preact1
    torch.testing.assert_close(block(x.new_ones(1, 64, 4, 4)),
                               x.new_ones(1, 64, 4, 4) + block.conv(block.relu(block.bn(x.new_ones(1, 64, 4, 4)))))


def _numpy_mlp_as_torch(mlp: N.MLP) -> MLP:
    """The same weights in the PyTorch MLP (ELU, one hidden layer; torch stores Linear as (out, in))."""
    hidden = [layer.params["bias"].shape[0] for layer in mlp.linear_layers()[:-1]]
    net = MLP(mlp.linear_layers()[-1].params["bias"].shape[0], in_channels=3, image_size=4, hidden=hidden).double()
    torch_linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for ours, theirs in zip(mlp.linear_layers(), torch_linears):
            theirs.weight.copy_(torch.from_numpy(ours.params["weight"].T))
            theirs.bias.copy_(torch.from_numpy(ours.params["bias"]))
    return net


def test_numpy_and_pytorch_mlp_updates_equal_torch_optim_sgd_on_one_batch():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 20, (16, 48)), rng.integers(0, 5, 16)          # pixel-scale inputs, as mean_image gives
    mlp = N.MLP(48, [7], 5, seed=0, dtype=np.float64, init="normal", weight_std=1e-2)
    net = _numpy_mlp_as_torch(mlp)
    lr = 1e-3
    # NumPy: forward, softmax cross-entropy backward, its sgd_step.
    probs = mlp.forward(x)
    ce = N.CrossEntropy()
    onehot = np.eye(5)[y]
    mlp.backward(ce.backward(probs, onehot))
    mlp.sgd_step(lr)
    # PyTorch: the same batch, torch.optim.SGD, and the train stage's optimizer at the practical's settings.
    reference = _numpy_mlp_as_torch(N.MLP(48, [7], 5, seed=0, dtype=np.float64, init="normal", weight_std=1e-2))
    ours = make_optimizer(net.parameters(), TrainParams(optimizer="sgd", lr=lr, momentum=0.0, weight_decay=0.0))
    plain = torch.optim.SGD(reference.parameters(), lr=lr)
    xt = torch.from_numpy(x).view(16, 3, 4, 4)
    for model, opt in ((net, ours), (reference, plain)):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), torch.from_numpy(y)).backward()
        opt.step()
    for a, b, theirs in zip(net.parameters(), reference.parameters(), [p for layer in mlp.linear_layers()
                                                                       for p in (layer.params["weight"].T,
                                                                                 layer.params["bias"])]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)                 # the stage's SGD is plain SGD
        torch.testing.assert_close(a.detach(), torch.from_numpy(np.ascontiguousarray(theirs)), rtol=1e-9, atol=1e-12)


def test_numpy_mlp_init_is_the_practicals_template():
    mlp = N.MLP(3072, [100], 10, seed=0, init="normal", weight_std=1e-4)
    w = mlp.linear_layers()[0].params["weight"]
    assert abs(w.std() - 1e-4) < 2e-6 and not any(layer.params["bias"].any() for layer in mlp.linear_layers())
    he = N.MLP(3072, [100], 10, seed=0, init="he").linear_layers()[0].params["weight"]
    assert abs(he.std() - np.sqrt(2 / 3072)) < 1e-3
    net = MLP(10, hidden=[100], init_std=1e-4)
    assert abs(net.body[1].weight.std().item() - 1e-4) < 2e-6 and not net.head.bias.any()


def test_steps_per_epoch_draws_full_batches_from_successive_passes():
    p = TrainParams(batch_size=4, steps_per_epoch=5)
    batches = list(epoch_batches(10, p, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4] * 5                          # 20 samples: two passes of 10
    drawn = torch.cat(batches)
    assert sorted(drawn[:10].tolist()) == list(range(10))              # a pass has each image once
    assert sorted(drawn[10:].tolist()) == list(range(10))
    assert len(list(epoch_batches(10, TrainParams(batch_size=4), torch.Generator()))) == 3   # 0: one pass


def test_mean_image_normalisation_is_pixels_minus_the_training_mean_image():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50, 8, 8, 3), dtype=torch.uint8, generator=gen)
    mean = mean_image(x, 3, chunk=7)                                    # chunked sum = the plain mean
    expected = x.permute(0, 3, 1, 2).double().mean(0)
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64) * 255, expected, rtol=0, atol=1e-3)
    out = BatchTransform(3, 3, 0, 8, "mean_image", mean=mean)(x[:4], training=False)
    torch.testing.assert_close(out.double(), x[:4].permute(0, 3, 1, 2).double() - expected, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="needs the native resolution"):
        BatchTransform(3, 3, 16, 8, "mean_image", mean=mean)


def test_layernorms_agree_with_torch_and_each_other():
    rows = compare_layernorms(rows=32, features=16, repeats=2)
    assert [r["implementation"] for r in rows] == ["torch.nn.LayerNorm", "LayerNormAutograd", "LayerNormManual"]
    for r in rows:
        assert r["gradcheck_fp64"] is True
        assert max(v for k, v in r.items() if k.startswith("max_diff") and k.endswith("fp64")) < 1e-10
        assert max(v for k, v in r.items() if k.startswith("max_diff") and k.endswith("fp32")) < 1e-4
        assert r["fwd_bwd_ms"] > 0


def test_pooled_split_is_80_10_10_of_every_image():
    rng = np.random.default_rng(0)
    data = {"x_train": np.arange(500)[:, None], "y_train": rng.integers(0, 10, 500),
            "x_test": np.arange(500, 600)[:, None], "y_test": rng.integers(0, 10, 100)}
    out = split_arrays(data, SplitPlan(val_fraction=0.1, val="pooled", test_fraction=0.1), seed=0)
    sizes = [len(out[f"y_{s}"]) for s in ("train", "val", "test")]
    assert sizes == [480, 60, 60]
    ids = np.concatenate([out[f"x_{s}"][:, 0] for s in ("train", "val", "test")])
    assert sorted(ids.tolist()) == list(range(600))                    # every image once, train and test mixed
    assert (out["x_test"][:, 0] < 500).any() and (out["x_train"][:, 0] >= 500).any()
    assert "80/10/10%" in SplitPlan(0.1, "pooled", 0.1).describe("the official test split")
