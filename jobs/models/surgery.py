"""Model surgery as config (issue 8): freeze regimes, activation swaps and Squeeze-and-Excitation,
applied in the order a config lists them. Every function logs what it did and returns a summary.

Run surgery after the weights are loaded (create_model does that): wrapping a module renames its
state_dict keys (`layer4.*` -> `layer4.0.*`, `bn2.*` -> `bn2.0.*`).
"""
from __future__ import annotations

import fnmatch
import inspect
import logging
import re
from collections import OrderedDict

import torch
from torch import nn

from jobs.models.registry import count_params, find_head

_LOG = logging.getLogger(__name__)

FREEZE_REGIMES = ("head", "last_block", "none")
_STAGE_CONTAINERS = ("stages", "blocks", "layers", "features")   # timm, timm/ViT, torchvision ViT, EfficientNet


# --- freeze ----------------------------------------------------------------------------------

def last_stage(model: nn.Module) -> str:
    """Dotted path of the backbone's last stage: the highest `layerN` (torchvision and timm
    ResNets), else the last child of the shallowest `stages`/`blocks`/`layers`/`features`
    container (timm ConvNeXt/EfficientNet/ViT, torchvision ViT's encoder.layers, EfficientNet)."""
    for path, module in sorted(model.named_modules(), key=lambda item: item[0].count(".") if item[0] else -1):
        children = dict(module.named_children())
        numbered = [k for k in children if re.fullmatch(r"layer\d+", k)]
        if numbered:
            return _join(path, max(numbered, key=lambda k: int(k[5:])))
        for key in _STAGE_CONTAINERS:
            container = children.get(key)
            if isinstance(container, (nn.Sequential, nn.ModuleList)) and len(container):
                return _join(path, _join(key, list(dict(container.named_children()))[-1]))
    raise ValueError(f"{type(model).__name__}: no last stage found (looked for layerN, "
                     f"{', '.join(_STAGE_CONTAINERS)}); freeze with a list of module-name prefixes instead")


def _after(model: nn.Module, path: str) -> list[str]:
    """Modules registered after `path` at every level up to the root: what runs after the last
    stage (final norms, pooling, the head), e.g. ViT's encoder.ln and heads."""
    found, parts = [], path.split(".")
    for depth in range(len(parts), 0, -1):
        parent_path, name = ".".join(parts[:depth - 1]), parts[depth - 1]
        names = list(dict(model.get_submodule(parent_path).named_children()))
        found += [_join(parent_path, n) for n in names[names.index(name) + 1:]]
    return found


def freeze(model: nn.Module, regime: str | list[str], log: logging.Logger | None = None) -> dict:
    """Train only part of the model. `head`: the classifier; `last_block`: the classifier, the
    last stage (last_stage()) and what runs after it; `none`: everything; a list: the modules whose
    dotted names start with one of its prefixes. Logs and returns trainable and total counts."""
    log = log or _LOG
    if isinstance(regime, (list, tuple)):
        prefixes = list(regime)
    elif regime == "none":
        prefixes = [""]
    elif regime == "head":
        prefixes = [find_head(model)[0]]
    elif regime == "last_block":
        stage = last_stage(model)
        prefixes = [stage] + _after(model, stage) + [find_head(model)[0]]
    else:
        raise ValueError(f"freeze: got {regime!r}; valid choices: {', '.join(FREEZE_REGIMES)} "
                         f"or a list of module-name prefixes")
    names = [n for n, _ in model.named_parameters()]
    unmatched = [p for p in prefixes if p and not any(_under(n, p) for n in names)]
    if isinstance(regime, (list, tuple)) and unmatched:
        raise ValueError(f"freeze: no parameters under {unmatched}; top-level modules: "
                         f"{', '.join(n for n, _ in model.named_children())}")
    # Only prefixes that own parameters and are not inside another one (classifier.1 in classifier).
    prefixes = [p for p in dict.fromkeys(prefixes) if p not in unmatched]
    prefixes = [p for p in prefixes if not any(q != p and _under(p, q) for q in prefixes)]
    for name, param in model.named_parameters():
        param.requires_grad = any(_under(name, p) for p in prefixes)
    trainable, total = count_params(model)
    shown = "everything" if prefixes == [""] else ", ".join(prefixes)
    log.info("freeze %s: training %s; trainable params %s of %s", regime, shown, f"{trainable:,}", f"{total:,}")
    return {"regime": regime, "trained": prefixes, "trainable": trainable, "total": total}


def _under(name: str, prefix: str) -> bool:
    """`name` is the module `prefix` or inside it; a prefix with * or ? is an fnmatch pattern on
    module names (`*.se`: every SE module, wherever it is)."""
    if any(c in prefix for c in "*?["):
        return fnmatch.fnmatchcase(name, prefix) or fnmatch.fnmatchcase(name, prefix + ".*")
    return not prefix or name == prefix or name.startswith(prefix + ".")


def _join(parent: str, *children: str) -> str:
    return ".".join([parent, *children] if parent else children)


# --- replace_activation --------------------------------------------------------------------------

def replace_activation(model: nn.Module, type: str = "ReLU", with_: str = "SiLU", start: int = 7,
                       log: logging.Logger | None = None) -> dict:
    """Replace the `start`-th and later `type` modules (1-based, depth-first `named_modules()`
    order) by new `with_` modules. Module instances are counted, not calls: torchvision's ResNet
    BasicBlock calls its one `relu` twice in forward, and it counts once (resnet18: 9 instances,
    17 calls). Functional activations (F.relu) are not modules and are left alone."""
    log = log or _LOG
    old_cls, new_cls = _nn_class(type), _nn_class(with_)
    if start < 1:
        raise ValueError(f"replace_activation: start is 1-based; got {start}")
    found = [(path, m) for path, m in model.named_modules() if isinstance(m, old_cls)]   # each instance once
    before = len(found)
    chosen = found[start - 1:]
    fresh = {id(m): _make(new_cls, m) for _, m in chosen}
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):   # named_children() would skip a repeat
            if child is not None and id(child) in fresh:
                setattr(parent, name, fresh[id(child)])     # every reference to a shared instance
    remaining = sum(isinstance(m, old_cls) for m in model.modules())
    inserted = sum(isinstance(model.get_submodule(p), new_cls) and not isinstance(model.get_submodule(p), old_cls)
                   for p, _ in chosen)
    indices = list(range(start, before + 1))
    log.info("replace_activation: %d %s module instances before (depth-first named_modules order; a module "
             "called several times in forward, e.g. ResNet BasicBlock's relu, is one instance)", before, type)
    log.info("replaced indices (1-based): %s%s", _ranges(indices) or "none",
             f" = {', '.join(p for p, _ in chosen)}" if chosen else f" (start {start} > {before} instances)")
    log.info("%s remaining: %d", type, remaining)
    log.info("%s inserted: %d", with_, inserted)
    if remaining + inserted != before or remaining != min(start - 1, before) or inserted != len(chosen):
        raise AssertionError(f"replace_activation: {remaining} {type} remaining + {inserted} {with_} inserted "
                             f"!= {before} before (start {start})")
    return {"type": type, "with": with_, "start": start, "before": before, "replaced_indices": indices,
            "replaced": [p for p, _ in chosen], "remaining": remaining, "inserted": inserted}


def _nn_class(name: str) -> type:
    cls = getattr(nn, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"replace_activation: {name!r} is not a torch.nn module; e.g. ReLU, SiLU, GELU, "
                         f"LeakyReLU, Hardswish, Mish")
    return cls


def _make(cls: type, old: nn.Module) -> nn.Module:
    """A new activation, in place when the old one was and the new one can be."""
    if "inplace" in inspect.signature(cls).parameters:
        return cls(inplace=getattr(old, "inplace", False))
    return cls()


def _ranges(indices: list[int]) -> str:
    """[7, 8, 9, 12] -> '7-9, 12'."""
    out, run = [], []
    for i in indices + [None]:
        if run and (i is None or i != run[-1] + 1):
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        if i is not None:
            run.append(i)
    return ", ".join(out)


# --- Squeeze-and-Excitation ------------------------------------------------------------------

class SqueezeExcite(nn.Module):
    """Hu et al. 2018: global average pool, Linear C -> C/r, ReLU, Linear C/r -> C, sigmoid, and
    the input's channels scaled by that gate. Parameters: 2*C*h + h + C, h = max(1, C // r)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1, self.act, self.fc2 = nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (N, C, H, W) -> (N, C, H, W)
        gate = torch.sigmoid(self.fc2(self.act(self.fc1(x.mean(dim=(2, 3))))))   # (N, C)
        return x * gate[:, :, None, None]


def se_params(channels: int, reduction: int = 16) -> int:
    hidden = max(1, channels // reduction)
    return 2 * channels * hidden + hidden + channels


def add_se(model: nn.Module, reduction: int = 16, where: str = "features", log: logging.Logger | None = None) -> dict:
    """`features`: one SE after the backbone's last stage (the stage becomes Sequential(stage, SE));
    `blocks`: one inside every residual block (torchvision/timm BasicBlock and Bottleneck), gating
    the residual branch before the addition: its last BN becomes Sequential(bn, SE)."""
    log = log or _LOG
    _, before = count_params(model)
    if where == "features":
        path = last_stage(model)
        channels = _out_channels(model.get_submodule(path), path)
        _set(model, path, _with_se(model.get_submodule(path), SqueezeExcite(channels, reduction)))
        places = [(_join(path, "se"), channels)]
    elif where == "blocks":
        places = []
        for path, block in list(model.named_modules()):
            bn_name = next((n for n in ("bn3", "bn2") if isinstance(getattr(block, n, None), nn.BatchNorm2d)), None)
            if bn_name and hasattr(block, "conv1") and hasattr(block, "downsample"):   # a residual block
                bn = getattr(block, bn_name)
                setattr(block, bn_name, _with_se(bn, SqueezeExcite(bn.num_features, reduction)))
                places.append((_join(path, bn_name, "se"), bn.num_features))
        if not places:
            raise ValueError(f"se where=blocks: no residual blocks (BasicBlock/Bottleneck with bn2/bn3) in "
                             f"{type(model).__name__}; use where: features")
    else:
        raise ValueError(f"se: where got {where!r}; valid choices: features, blocks")
    _, after = count_params(model)
    log.info("se (reduction %d, where %s): %d SE module(s) after %s; params %s -> %s (+%s)", reduction, where,
             len(places), ", ".join(f"{p} (C={c})" for p, c in places), f"{before:,}", f"{after:,}",
             f"{after - before:,}")
    return {"where": where, "reduction": reduction, "count": len(places), "at": [p for p, _ in places],
            "params_before": before, "params_after": after, "params_added": after - before}


def _with_se(module: nn.Module, se: SqueezeExcite) -> nn.Sequential:
    """Sequential(module as `0`, SE as `se`): the wrapped module's weights keep their keys
    (`bn3.0.weight`, as nn.Sequential(bn, se) would name them) and every SE is `<path>.se`, so
    `freeze: [layer4, fc, "*.se"]` trains all of them."""
    return nn.Sequential(OrderedDict([("0", module), ("se", se)]))


def _out_channels(stage: nn.Module, path: str) -> int:
    """Channels a convolutional stage puts out: its last BatchNorm2d, else its last Conv2d."""
    norms = [m.num_features for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    convs = [m.out_channels for m in stage.modules() if isinstance(m, nn.Conv2d)]
    if not (norms or convs):
        raise ValueError(f"se: {path} has no Conv2d/BatchNorm2d; SE gates (N, C, H, W) feature maps")
    return norms[-1] if norms else convs[-1]


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


# --- in the order a config lists them ----------------------------------------------------------

def apply_surgery(model: nn.Module, steps: list[dict], log: logging.Logger | None = None) -> list[dict]:
    """Apply config steps in order, each a one-key mapping, e.g.
    `[{replace_activation: {type: ReLU, with: SiLU, start: 7}}, {se: {reduction: 16}}, {freeze: head}]`."""
    log = log or _LOG
    ops = {"replace_activation": _step_activation, "se": _step_se, "freeze": _step_freeze}
    summaries = []
    for i, step in enumerate(steps or []):
        if not isinstance(step, dict) or len(step) != 1 or next(iter(step)) not in ops:
            raise ValueError(f"surgery step {i + 1}: got {step!r}; each step is one of "
                             f"{', '.join(f'{{{k}: ...}}' for k in ops)}")
        (op, args), = step.items()
        summaries.append({"op": op, **ops[op](model, args, log)})
    return summaries


def _step_activation(model, args, log):
    args = dict(args or {})
    if "with" in args:
        args["with_"] = args.pop("with")
    return replace_activation(model, log=log, **args)


def _step_se(model, args, log):
    return add_se(model, log=log, **(args or {}))


def _step_freeze(model, args, log):
    return freeze(model, args, log)
