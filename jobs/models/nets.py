"""The project's own networks, registered by name in jobs/models/registry.py: the MLP/ConvNet
practical's `mlp` (its PyTorch MLP and tuned variants) and `preact_vgg` (its VGG-13-like ConvNet
with pre-activation residual blocks), and `search_cnn` (the CIFAR-100 search's CNN, its depth,
width, dropout and normalisation constructor arguments). Written here because neither
torchvision nor timm has them: they are the practical's own layer tables, and a CNN whose shape a
search space sets."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
NORMS = ("none", "batch", "layer")


class MLP(nn.Module):
    """Flatten -> [Linear -> norm -> activation -> dropout] per hidden size -> Linear (`head`).

    init_std > 0 draws every weight from N(0, init_std^2) with zero biases, as the practical's
    template does (1e-4); 0 keeps PyTorch's default (Kaiming-uniform) initialisation."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32, hidden: list[int] | tuple = (100,),
                 activation: str = "elu", norm: str = "none", dropout: float = 0.0, init_std: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"mlp: activation {activation!r}; valid choices: {', '.join(ACTIVATIONS)}")
        if norm not in NORMS:
            raise ValueError(f"mlp: norm {norm!r}; valid choices: {', '.join(NORMS)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if norm != "none":
                layers.append(nn.BatchNorm1d(size) if norm == "batch" else nn.LayerNorm(size))
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)
        if init_std:
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=init_std)
                    nn.init.zeros_(module.bias)

    def forward(self, x):           # (N, C, H, W) -> (N, classes)
        return self.head(self.body(x))


class PreActBlock(nn.Module):
    """x + conv3x3(relu(bn(x))): BatchNorm -> ReLU -> 3x3 conv, added to its input (He et al. 2016b)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(channels, channels, 3, stride=1, padding=1)

    def forward(self, x):           # (N, C, H, W) -> (N, C, H, W)
        return x + self.conv(self.relu(self.bn(x)))


# The practical's table, in order: (name, layer). Channels as there; every conv has a bias
# (PyTorch's default), every maxpool is 3x3, stride 2, padding 1.
def _vgg_layers(in_channels: int) -> list[tuple[str, nn.Module]]:
    def pool():
        return nn.MaxPool2d(3, stride=2, padding=1)
    return [
        ("conv0", nn.Conv2d(in_channels, 64, 3, stride=1, padding=1)), ("preact1", PreActBlock(64)),
        ("conv1", nn.Conv2d(64, 128, 1, stride=1, padding=0)), ("maxpool1", pool()),
        ("preact2_a", PreActBlock(128)), ("preact2_b", PreActBlock(128)),
        ("conv2", nn.Conv2d(128, 256, 1, stride=1, padding=0)), ("maxpool2", pool()),
        ("preact3_a", PreActBlock(256)), ("preact3_b", PreActBlock(256)),
        ("conv3", nn.Conv2d(256, 512, 1, stride=1, padding=0)), ("maxpool3", pool()),
        ("preact4_a", PreActBlock(512)), ("preact4_b", PreActBlock(512)), ("maxpool4", pool()),
        ("preact5_a", PreActBlock(512)), ("preact5_b", PreActBlock(512)), ("maxpool5", pool()),
        ("bn", nn.BatchNorm2d(512)), ("relu", nn.ReLU()),
    ]


class PreActVGG(nn.Module):
    """The practical's VGG-13-like ConvNet. On 32x32 inputs the five maxpools leave 1x1x512, which
    the head (`linear` 512 -> classes) takes flattened; larger inputs are average-pooled to 1x1 first."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(OrderedDict(_vgg_layers(in_channels)))   # features.conv0, ...
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x):           # (N, C, H, W) -> (N, classes)
        return self.head(self.pool(self.features(x)).flatten(1))


CONV_NORMS = ("batch", "group", "layer", "none")


def conv_norm(kind: str, channels: int) -> nn.Module:
    """A normalisation over conv feature maps (N, C, H, W): batch, group (8 groups, or fewer when
    C is small), layer (one group: LayerNorm over C, H, W) or none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class SearchCNN(nn.Module):
    """`search_cnn`: the hyper-parameter search's CNN (configs/cifar100_hpo.yaml), every size a
    constructor argument so that a search space can set it: `depth` stages of two 3x3 conv ->
    norm -> ReLU, a 2x2 max-pool after each of the first three, channels `width` doubling per
    stage up to 8 x width; global average pool, dropout, Linear `head`."""

    def __init__(self, num_classes: int, in_channels: int = 3, depth: int = 3, width: int = 32,
                 dropout: float = 0.0, norm: str = "batch"):
        super().__init__()
        if norm not in CONV_NORMS:
            raise ValueError(f"search_cnn: norm {norm!r}; valid choices: {', '.join(CONV_NORMS)}")
        if not 1 <= depth <= 6 or width < 1 or not 0 <= dropout < 1:
            raise ValueError(f"search_cnn: depth {depth} (1..6), width {width} (>= 1), dropout {dropout} ([0, 1))")
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in range(depth):
            out = width * 2 ** min(stage, 3)
            for _ in range(2):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=norm == "none"), conv_norm(norm, out),
                           nn.ReLU(inplace=True)]
                channels = out
            if stage < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):           # (N, C, H, W) -> (N, classes)
        return self.head(self.pool(self.features(x)))
