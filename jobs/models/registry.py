"""Model builders used by the training stages, and the model registry: `create_model(spec, num_classes)`
builds the project's own nets, torchvision's and timm's by name, with the classifier head replaced
(`replace_head`) and pretrained weights from the caches or a state_dict file; `list_models(pattern)`
says what can be built (also `python -m pipeline models PATTERN`). The download stage fills the
caches (`stage_imagenet_weights`, `write_weights_manifest`); later stages read them offline
(`use_weights_cache`)."""
from __future__ import annotations

import difflib
import fnmatch
import inspect
import json
import logging
import os
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from safeio import atomic_path, atomic_write_json

from jobs.data.files import MANIFEST, sha256
from jobs.models.nets import MLP, PreActVGG, SearchCNN
from jobs.models.spec import SOURCES, ModelSpec

_LOG = logging.getLogger(__name__)


class SmallCNN(nn.Module):
    """Two conv blocks and a small head; sized for 8x8 to 32x32 greyscale images."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32, image_size: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),                                              # (N, 2w, H/2, W/2)
        )
        flat = 2 * width * (image_size // 2) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(flat, 128),
                                  nn.ReLU(inplace=True), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, classes)
        return self.head(self.features(x))


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


# ---------------------------------------------------------------------------------------------
# Models by name (issue 8): the project's own nets, torchvision's and timm's behind one call.
# ---------------------------------------------------------------------------------------------


# The project's own networks by name: name -> factory(num_classes, **kwargs) -> nn.Module.
PROJECT_MODELS: dict[str, Callable[..., nn.Module]] = {"small_cnn": SmallCNN, "mlp": MLP, "preact_vgg": PreActVGG,
                                                        "search_cnn": SearchCNN}


def _as_spec(spec: ModelSpec | dict | str) -> ModelSpec:
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, str):
        return ModelSpec(spec)
    unknown = set(spec) - {f.name for f in fields(ModelSpec)}
    if unknown:
        raise ValueError(f"model: unknown keys {sorted(unknown)}; valid keys: name, pretrained, source, kwargs")
    return ModelSpec(**spec)


def create_model(spec: ModelSpec | dict | str, num_classes: int, log: logging.Logger | None = None,
                 image_size: int | None = None, info: dict | None = None) -> nn.Module:
    """Build `spec.name` with a `num_classes` head. pretrained: `imagenet` (torchvision's DEFAULT
    weights from the torch hub cache, TORCH_HOME; timm's from the HF cache), `none`, or the path
    of a state_dict file (head weights are kept when their shape fits, else re-initialised).
    `image_size` goes to project nets that take it (the digits CNN sizes its head from it)."""
    spec, log = _as_spec(spec), log or _LOG
    if spec.source not in SOURCES:
        raise ValueError(f"model {spec.name!r}: unknown source {spec.source!r}; valid choices: {', '.join(SOURCES)}")
    source = _resolve_source(spec.name) if spec.source == "auto" else spec.source
    imagenet = spec.pretrained == "imagenet"
    if source == "project":
        if imagenet:
            raise ValueError(f"model {spec.name!r} is a project net: it has no ImageNet weights; "
                             f"use pretrained: none or a checkpoint file")
        model = _build_project(spec, num_classes, image_size)
    elif source == "torchvision":
        model = _build_torchvision(spec, imagenet)
    elif source == "timm":
        model = _build_timm(spec, imagenet)
    else:
        raise AssertionError(source)
    log.info("model %s (%s), pretrained: %s", spec.name, source, spec.pretrained)
    old_head, new_head = replace_head(model, num_classes, log)
    if info is not None:              # what was built, for a caller's report
        info.update(source=source, head=find_head(model)[0], old_head=old_head, new_head=new_head)
    if spec.pretrained not in ("imagenet", "none"):
        load_checkpoint(model, spec.pretrained, log)
    return model


def _resolve_source(name: str) -> str:
    """`auto`: the project's nets first, then torchvision, then timm; unknown names fail with
    close matches from all three."""
    if name in PROJECT_MODELS:
        return "project"
    import torchvision
    if name in torchvision.models.list_models():
        return "torchvision"
    timm = _timm()
    if timm is not None and timm.is_model(name):
        return "timm"
    raise ValueError(unknown_model_message(name))


def unknown_model_message(name: str) -> str:
    """One line: the unknown name and the close matches from every source."""
    catalog = list_models()
    pool = {n: src for src, names in reversed(list(catalog.items())) for n in names}
    close = difflib.get_close_matches(name, list(pool), n=8, cutoff=0.6)
    hint = ", ".join(f"{n} ({pool[n]})" for n in close) or "none"
    return (f"unknown model {name!r}; close matches: {hint}; "
            f"list the names with `python -m pipeline models PATTERN`")


def _build_project(spec: ModelSpec, num_classes: int, image_size: int | None) -> nn.Module:
    factory = PROJECT_MODELS.get(spec.name)
    if factory is None:
        raise ValueError(unknown_model_message(spec.name))
    kwargs = dict(spec.kwargs)
    if image_size is not None and "image_size" in inspect.signature(factory).parameters:
        kwargs.setdefault("image_size", image_size)
    return factory(num_classes, **kwargs)


def _build_torchvision(spec: ModelSpec, imagenet: bool) -> nn.Module:
    import torchvision
    weights = torchvision.models.get_model_weights(spec.name).DEFAULT if imagenet else None
    if weights is not None:
        _check_hub_cache(spec.name, weights.url)
    return torchvision.models.get_model(spec.name, weights=weights, **spec.kwargs)


def _check_hub_cache(name: str, url: str) -> None:
    """Offline stages (HF_HUB_OFFLINE=1) must find the weights the download stage staged."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not path.exists():
        raise FileNotFoundError(f"ImageNet weights of {name} are not in the torch hub cache: {path} is missing; "
                                f"list {name} in the download stage's `models:` and run it, or set pretrained: <file>")


def _build_timm(spec: ModelSpec, imagenet: bool) -> nn.Module:
    timm = _timm()
    if timm is None:
        raise ValueError(f"model {spec.name!r} needs timm, which is not installed (pip install timm)")
    try:
        return timm.create_model(spec.name, pretrained=imagenet, cache_dir=_hf_hub_cache(), **spec.kwargs)
    except (OSError, RuntimeError) as err:   # e.g. offline and the weights are not in the HF cache
        if not imagenet:
            raise
        raise FileNotFoundError(f"timm weights of {spec.name} could not be loaded ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''}); list {spec.name} in the download "
                                f"stage's `models:` and run it (it fills the HF cache), or set pretrained: <file>") from err


def _hf_hub_cache() -> Path | None:
    """The HF hub cache under HF_HOME, passed to timm explicitly: huggingface_hub reads HF_HOME
    once, when it is first imported, which may be before use_weights_cache() set it."""
    home = os.environ.get("HF_HOME")
    return Path(home) / "hub" if home else None


def _timm():
    try:
        import timm  # heavy and optional: imported only when a timm model is asked for
    except ImportError:
        return None
    return timm


def load_checkpoint(model: nn.Module, path: str | Path, log: logging.Logger | None = None) -> list[str]:
    """Load a state_dict file (or a dict holding one under `model`/`state_dict`, as best.pt does).
    Every key must fit except the classifier's, which is skipped when its shape differs (an
    ImageNet checkpoint into a 10-class model). Returns the skipped keys."""
    log = log or _LOG
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained: {path} is not a file; valid choices: imagenet, none, or a "
                                f"state_dict file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
    own = model.state_dict()
    head = find_head(model)[0] + "."
    skipped = [k for k, v in state.items() if k.startswith(head) and k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(k not in skipped for k in missing):
        raise ValueError(f"{path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    log.info("weights from %s: %d tensors loaded%s", path, len(state),
             f"; head kept at random init (shape differs): {', '.join(skipped)}" if skipped else "")
    return skipped


# --- pretrained weights: staged by the download stage, read offline by every later stage ----------

def use_weights_cache(cache_dir: Path, offline: bool = True) -> None:
    """Point torchvision (TORCH_HOME: <cache>/hub/checkpoints) and timm (HF_HOME: <cache>/huggingface)
    at the experiment's cache. offline: no downloads, every stage after `download` reads only
    what that stage staged (compute nodes often have no internet)."""
    os.environ.update(TORCH_HOME=str(cache_dir), HF_HOME=str(Path(cache_dir) / "huggingface"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if offline:
            os.environ[name] = "1"
        else:
            os.environ.pop(name, None)


def stage_imagenet_weights(name: str, cache_dir: Path, local_file: str = "",
                           log: logging.Logger | None = None) -> list[Path]:
    """Fetch (or copy from `local_file`) model `name`'s ImageNet weights into the cache where
    create_model(pretrained=imagenet) finds them offline; returns the staged files."""
    log = log or _LOG
    use_weights_cache(cache_dir, offline=False)
    # `timm:efficientnet_b0` names the library where torchvision has a model of the same name.
    source, _, name = name.rpartition(":") if ":" in name else ("", "", name)
    if source and source not in ("torchvision", "timm"):
        raise ValueError(f"models: {source!r} in {source}:{name}; valid prefixes: torchvision:, timm:")
    source = source or _resolve_source(name)
    if source == "project":
        raise ValueError(f"models: {name!r} is a project net: it has no ImageNet weights; remove it from `models:`")
    if source == "timm":
        return _stage_timm(name, Path(cache_dir), local_file, log)
    return _stage_torchvision(name, Path(cache_dir), local_file, log)


def _stage_torchvision(name: str, cache_dir: Path, local_file: str, log: logging.Logger) -> list[Path]:
    """torchvision's DEFAULT weights under their own file name in <cache>/hub/checkpoints."""
    import torchvision
    weights = torchvision.models.get_model_weights(name).DEFAULT
    target = cache_dir / "hub" / "checkpoints" / os.path.basename(weights.url)
    target.parent.mkdir(parents=True, exist_ok=True)
    if local_file:
        _check_fits(name, Path(local_file))
        with atomic_path(target) as tmp:
            shutil.copyfile(local_file, tmp)
        log.info("weights of %s: staged local file %s as %s", name, local_file, target)
    elif target.exists():
        log.info("weights of %s: already staged in %s, not downloading", name, target)
    else:
        log.info("weights of %s: downloading %s (hash checked) into %s", name, weights.url, target.parent)
        torch.hub.load_state_dict_from_url(weights.url, model_dir=str(target.parent), progress=False,
                                           check_hash=True)
    return [target]


def _check_fits(name: str, path: Path) -> None:
    """A local weights file must be a plain state_dict of torchvision's `name` (the file format
    torch.hub caches), so training does not fail on it later, offline."""
    import torchvision
    if not path.is_file():
        raise FileNotFoundError(f"weights_files.{name}: {path} is not a file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = torchvision.models.get_model(name, weights=None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights_files.{name}: {path} is not a state_dict of torchvision's {name} (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}); give the file torch.hub would download")


def _stage_timm(name: str, cache_dir: Path, local_file: str, log: logging.Logger) -> list[Path]:
    """timm's weights through its own loader, into the HF hub cache (or torch hub's, for the few
    models timm still fetches by URL); returns the files it left there."""
    if local_file:
        raise ValueError(f"weights_files.{name}: timm keeps weights in the Hugging Face cache's own layout, so "
                         f"one file cannot be staged there; drop it here and set the train stage's "
                         f"model.pretrained to the file (a state_dict), or copy a filled <cache>/huggingface over")
    timm = _timm()
    if timm is None:
        raise ValueError(f"models: {name!r} needs timm, which is not installed (pip install timm)")
    hub = cache_dir / "huggingface" / "hub"
    timm.create_model(name, pretrained=True, cache_dir=hub)
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and cfg.hf_hub_id:
        repo = hub / ("models--" + cfg.hf_hub_id.split("@")[0].replace("/", "--")) / "snapshots"
        files = sorted(f for f in repo.rglob("*") if f.is_file())
    else:
        files = [Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)] if cfg else []
    if not files or not all(f.exists() for f in files):
        raise FileNotFoundError(f"timm loaded {name}'s weights but they are not under {cache_dir}; "
                                f"check that HF_HOME and TORCH_HOME are not overridden for this stage")
    log.info("weights of %s: staged by timm in %s (%d files)", name, files[0].parent, len(files))
    return files


def write_weights_manifest(cache_dir: Path, staged: dict[str, list[Path]]) -> dict:
    """<cache>/MANIFEST.json: sha256 of every staged weights file, checked before training reads
    one. Entries of other experiments sharing the cache are kept as recorded (not re-hashed, so a
    file damaged since still shows as damaged)."""
    path = Path(cache_dir) / MANIFEST
    old = json.loads(path.read_text())["files"] if path.exists() else {}
    entries = {rel: e for rel, e in old.items() if (Path(cache_dir) / rel).exists()}
    for model, files in staged.items():
        for f in files:
            entries[str(f.relative_to(cache_dir))] = {"sha256": sha256(f), "bytes": f.stat().st_size, "model": model}
    manifest = {"source": "pretrained weights staged by the download stage", "files": dict(sorted(entries.items()))}
    atomic_write_json(path, manifest)
    return manifest


# --- the classifier head, whatever the architecture calls it ----------------------------------

_HEAD_NAMES = ("fc", "classifier", "head", "heads")


def find_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """(dotted path, module) of the final Linear classifier: timm's get_classifier(), else the
    first of `fc`, `classifier`, `head`, `heads` that is a Linear or a container whose last
    Linear it is (torchvision EfficientNet's classifier.1, ViT's heads.head)."""
    if hasattr(model, "get_classifier"):
        clf = model.get_classifier()
        for path, module in model.named_modules():
            if module is clf and path:
                return path, clf
    for name in _HEAD_NAMES:
        module = getattr(model, name, None)
        if isinstance(module, nn.Linear):
            return name, module
        if isinstance(module, nn.Module):
            linears = [(p, m) for p, m in module.named_modules() if isinstance(m, nn.Linear)]
            if linears:
                return f"{name}.{linears[-1][0]}", linears[-1][1]
    raise ValueError(f"{type(model).__name__}: no classifier found (looked for get_classifier() and "
                     f"{', '.join(_HEAD_NAMES)})")


def replace_head(model: nn.Module, num_classes: int, log: logging.Logger | None = None
                 ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Replace the classifier with a new Linear(in_features, num_classes); returns the old and new
    (in_features, out_features) and logs them. timm models go through reset_classifier()."""
    log = log or _LOG
    if _headless_timm(model):      # e.g. timm's DINOv2 ViTs: num_classes=0, features out, no Linear yet
        model.reset_classifier(num_classes)
        path, new = find_head(model)
        log.info("head %s: none (features, in_features=%d) -> in_features=%d out_features=%d",
                 path, new.in_features, new.in_features, new.out_features)
        return (new.in_features, 0), (new.in_features, new.out_features)
    path, old = find_head(model)
    old_shape = (old.in_features, old.out_features)
    if hasattr(model, "reset_classifier") and hasattr(model, "get_classifier"):
        model.reset_classifier(num_classes)
        path, new = find_head(model)
    else:
        new = nn.Linear(old.in_features, num_classes)
        parent, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    new_shape = (new.in_features, new.out_features)
    log.info("head %s: in_features=%d, out_features=%d -> in_features=%d out_features=%d",
             path, *old_shape, *new_shape)
    return old_shape, new_shape


def _headless_timm(model: nn.Module) -> bool:
    return hasattr(model, "reset_classifier") and isinstance(getattr(model, "get_classifier", lambda: None)(),
                                                             nn.Identity)


# --- what can be built -----------------------------------------------------------------------

def list_models(pattern: str = "") -> dict[str, list[str]]:
    """Names each source can build, filtered by a glob (`resnet1*`) or a substring (`resnet1`)."""
    import torchvision
    catalog = {"project": sorted(PROJECT_MODELS), "torchvision": sorted(torchvision.models.list_models())}
    timm = _timm()
    catalog["timm"] = sorted(timm.list_models()) if timm is not None else []
    if pattern:
        glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
        catalog = {src: [n for n in names if fnmatch.fnmatchcase(n, glob)] for src, names in catalog.items()}
    return catalog
