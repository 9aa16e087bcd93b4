"""Typed search configuration, loaded from YAML / ``--set key=value`` and validated in one place.

Resolution order (later wins): dataclass defaults < the space's paper defaults < the method's paper
defaults < the YAML file < ``--set`` / CLI flags. Every number of the search is a field here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message is one line saying what to fix."""


@dataclass
class ModelConfig:
    C: int = 16                    # initial channels
    layers: int = 5                # NB201: cells per stage (N); DARTS spaces: total cells
    track_running_stats: bool = True  # BN in searched ops (affine is False unless random features)
    exclude_ops: list[str] = field(default_factory=list)  # e.g. DrNAS's DARTS space drops "none"
    drop_path: float = 0.0         # max drop-path prob on op outputs in the supernet, ramped linearly to the
                                   # last epoch (RobustDARTS: p * epoch / (epochs - 1))


@dataclass
class WeightOptimConfig:
    """SGD on the supernet weights, cosine from ``lr`` to ``lr_min`` over the search epochs."""
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    nesterov: bool = False
    grad_clip: float = 5.0


@dataclass
class ArchOptimConfig:
    """Adam on the architecture parameters."""
    lr: float = 3e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 1e-3
    warmup_epochs: int = 0          # epochs of weight-only training before alpha starts moving
    order: int = 1                  # 1: first-order DARTS; 2: unrolled (second order)
    step_order: str = "arch_weight"  # per iteration: arch_weight (DARTS, PC-DARTS, DrNAS code) | weight_arch
                                     # (NAS-Bench-201's DARTS-V1 script: the weight step first)
    unrolled_eps: float = 0.01      # DARTS 2nd order: epsilon = unrolled_eps / ||grad||


@dataclass
class PartialChannelConfig:
    """PC-DARTS: 1/k of the channels enter the ops; edge normalisation beta over a node's inputs."""
    k: int = 1
    edge_norm: bool = False


@dataclass
class DrNASConfig:
    """DrNAS: Dirichlet regulariser, and the progressive scheme of its DARTS-space search."""
    reg: str = "l2"                 # l2 | kl | none
    reg_scale: float = 1e-3
    progressive: bool = False
    stage_epochs: list[int] = field(default_factory=lambda: [25, 25])  # nominal; scaled to `epochs`
    ks: list[int] = field(default_factory=lambda: [6, 4])               # partial channels per stage
    keep_ops: list[int] = field(default_factory=lambda: [7, 4])         # ops kept per edge per stage
    stage_warmup: int = 10          # nominal epochs of each stage before alpha moves (scaled)


@dataclass
class RandomFeaturesConfig:
    """RF-DARTS: convolutions keep their random init; only BN (+ optionally the classifier) trains."""
    enabled: bool = False
    train_classifier: bool = False
    bn_weight_decay: float = 0.0


@dataclass
class MIMConfig:
    """alphaDARTS masked image modelling. The defaults are the authors' search code (GitHub
    AlbertiPot/Semantic-DARTS at d525eed, ``--task cls_mask``); every choice stays a field for
    ablations and the Optuna study. The README's "choices and their source" table cites each one."""
    enabled: bool = False
    mask_ratio: float = 0.8        # per image int(L * (1 - ratio)) of the L patches are kept, the rest masked
    patch_size: int = 4
    loss_weight: float | str = "auto"  # auto: + l_rec / (l_rec / l_cls).detach(), i.e. rescaled to the
                                       # cross-entropy's value each step; a number: fixed weight; 0: off (DARTS)
    steps: str = "both"            # weight | arch | both: which steps add the reconstruction loss
    loss: str = "mse"              # mse | l1 | l2: per patch mean squared error, mean absolute error or the
                                   # Euclidean norm, then the mean over the masked patches only
    mask_value: float = 1.0        # masked pixels, in normalised units (the authors' mask token of ones)
    decoder: str = "authors"       # authors (convs, 2 transposed convs, Hardtanh) | light (1x1 conv + PixelShuffle)
    cls_on_masked: bool = True     # the classifier sees the masked image: one forward feeds both heads
    reconstruct: bool = True       # false: cross-entropy only (the "corrupted input, only cls loss" ablation)
    masked_eval: bool = True       # the epoch's validation masks its images too, with the steps' loss


@dataclass
class SearchConfig:
    method: str = "darts"
    space: str = "nb201"
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    seed: int = 0
    epochs: int = 50
    batch_size: int = 64
    train_portion: float = 0.5      # share of the training set that trains weights; the rest trains alpha
    max_steps_per_epoch: int | None = None  # cap for smoke runs; None = full epoch
    eval_batches: int | None = None  # batches of the alpha split evaluated per epoch; None = all
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    channels_last: bool = True       # NHWC supernet and inputs (faster with oneDNN and cuDNN; same numbers)
    cuda_graphs: bool = True         # on CUDA: replay each epoch's iterations from a CUDA graph (same numbers)
    recompute: str = "auto"          # auto | always | never: recompute separable-conv intermediates in backward
                                     # instead of keeping them (DARTS spaces: ~half the memory); auto: on CPUs
    nb201_table: str | None = None   # compact NB201 CSV; each epoch's genotype is looked up when set
    hessian_every: int = 0           # every E epochs: dominant eigenvalue of the val-loss Hessian in alpha (0: off)
    hessian_batches: int = 2
    collapse_skip: int | None = None  # stop a trial (status stopped_collapse) once its genotype has this many skips
    relaxation: str = "softmax"      # softmax (DARTS) | dirichlet (DrNAS): how alpha becomes edge weights
    cutout: int = 0                  # search-time cutout side on both splits (RobustDARTS: 16 with drop-path); 0: off
    cutout_prob: float = 1.0         # per-image probability; ramped like drop-path when model.drop_path > 0
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: WeightOptimConfig = field(default_factory=WeightOptimConfig)
    arch: ArchOptimConfig = field(default_factory=ArchOptimConfig)
    pc: PartialChannelConfig = field(default_factory=PartialChannelConfig)
    drnas: DrNASConfig = field(default_factory=DrNASConfig)
    rf: RandomFeaturesConfig = field(default_factory=RandomFeaturesConfig)
    mim: MIMConfig = field(default_factory=MIMConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Paper defaults per space: NB201 follows the NAS-Bench-201 DARTS config and DARTS-V1 script (nesterov,
# wd 5e-4, N=5, weight step before arch step);
# the DARTS-family spaces follow quark0/darts train_search.py (8 cells, wd 3e-4).
SPACE_DEFAULTS: dict[str, dict[str, Any]] = {
    "nb201": {"model": {"C": 16, "layers": 5}, "optim": {"weight_decay": 5e-4, "nesterov": True},
              "arch": {"step_order": "weight_arch"}},
    "darts": {"model": {"C": 16, "layers": 8}, "optim": {"weight_decay": 3e-4, "nesterov": False}},
}
for _s in ("s1", "s2", "s3", "s4"):
    SPACE_DEFAULTS[_s] = SPACE_DEFAULTS["darts"]


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 0.1}`` -> ``{"optim": {"lr": 0.1}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {p} is a value, not a section")
        node[leaf] = value
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "epochs=3"]`` -> nested dict; values are parsed as YAML scalars."""
    flat = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            flat[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r} ({e.__class__.__name__})") from None
    return _unflatten(flat)


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise ConfigError(f"{p}: not valid YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one value against a type hint, with a one-line error naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 and 1.0e30 as strings
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f"; valid: {', '.join(names)}"
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    kwargs = {k: _convert(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def _check_range(cfg: SearchConfig) -> None:
    from search_spaces import SPACES
    from trials import METHODS
    from raynas.data import DATASETS

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    need(cfg.method in METHODS, f"unknown method {cfg.method!r}; valid: {', '.join(METHODS)}")
    need(cfg.space in SPACES, f"unknown space {cfg.space!r}; valid: {', '.join(SPACES)}")
    need(cfg.dataset in DATASETS, f"unknown dataset {cfg.dataset!r}; valid: {', '.join(DATASETS)}")
    need(cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}")
    need(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    need(0.0 < cfg.train_portion < 1.0, f"train_portion must be in (0, 1), got {cfg.train_portion}")
    need(cfg.max_steps_per_epoch is None or cfg.max_steps_per_epoch >= 1,
         f"max_steps_per_epoch must be >= 1 or null, got {cfg.max_steps_per_epoch}")
    need(cfg.hessian_every >= 0 and cfg.hessian_batches >= 1, "hessian_every must be >= 0, hessian_batches >= 1")
    need(cfg.collapse_skip is None or cfg.collapse_skip >= 1, f"collapse_skip must be >= 1, got {cfg.collapse_skip}")
    need(cfg.eval_batches is None or cfg.eval_batches >= 0, f"eval_batches must be >= 0, got {cfg.eval_batches}")
    need(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"),
         f"device must be auto, cpu or cuda[:N], got {cfg.device!r}")
    need(cfg.model.C >= 1 and cfg.model.layers >= 1, "model.C and model.layers must be >= 1")
    if cfg.space != "nb201":
        need(cfg.model.layers >= 3, f"model.layers must be >= 3 for the {cfg.space} space (2 reductions)")
    o, a = cfg.optim, cfg.arch
    need(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    need(0 <= o.lr_min <= o.lr, f"optim.lr_min must be in [0, optim.lr], got {o.lr_min}")
    need(0 <= o.momentum < 1, f"optim.momentum must be in [0, 1), got {o.momentum}")
    need(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    need(o.grad_clip > 0, f"optim.grad_clip must be > 0, got {o.grad_clip}")
    need(a.lr >= 0, f"arch.lr must be >= 0, got {a.lr}")
    need(0 <= a.beta1 < 1 and 0 <= a.beta2 < 1, "arch.beta1 and arch.beta2 must be in [0, 1)")
    need(a.weight_decay >= 0, f"arch.weight_decay must be >= 0, got {a.weight_decay}")
    need(a.warmup_epochs >= 0, f"arch.warmup_epochs must be >= 0, got {a.warmup_epochs}")
    need(a.unrolled_eps > 0, f"arch.unrolled_eps must be > 0, got {a.unrolled_eps}")
    need(a.order in (1, 2), f"arch.order must be 1 or 2, got {a.order}")
    need(a.step_order in ("arch_weight", "weight_arch"),
         f"arch.step_order must be arch_weight or weight_arch, got {a.step_order!r}")
    need(cfg.recompute in ("auto", "always", "never"),
         f"recompute must be auto, always or never, got {cfg.recompute!r}")
    need(cfg.relaxation in ("softmax", "dirichlet"), f"relaxation must be softmax or dirichlet, got {cfg.relaxation!r}")
    need(cfg.pc.k >= 1, f"pc.k must be >= 1, got {cfg.pc.k}")
    need(cfg.model.C % cfg.pc.k == 0, f"pc.k={cfg.pc.k} must divide model.C={cfg.model.C}")
    d = cfg.drnas
    need(d.reg in ("l2", "kl", "none"), f"drnas.reg must be l2, kl or none, got {d.reg!r}")
    need(d.reg_scale >= 0, f"drnas.reg_scale must be >= 0, got {d.reg_scale}")
    if d.progressive:
        need(len(d.stage_epochs) == len(d.ks) == len(d.keep_ops) >= 1,
             "drnas.stage_epochs, drnas.ks and drnas.keep_ops need one entry per stage")
        need(all(e >= 1 for e in d.stage_epochs), "drnas.stage_epochs must all be >= 1")
        need(all(k >= 1 and cfg.model.C % k == 0 for k in d.ks), f"drnas.ks must divide model.C={cfg.model.C}")
        need(all(k >= 1 for k in d.keep_ops) and list(d.keep_ops) == sorted(d.keep_ops, reverse=True),
             "drnas.keep_ops must be >= 1 and non-increasing")
        need(a.order == 1, "drnas.progressive needs arch.order=1 (the reference cannot unroll across stages)")
    need(cfg.rf.bn_weight_decay >= 0, f"rf.bn_weight_decay must be >= 0, got {cfg.rf.bn_weight_decay}")
    mim = cfg.mim
    need(0.0 < mim.mask_ratio < 1.0, f"mim.mask_ratio must be in (0, 1), got {mim.mask_ratio}")
    need(mim.patch_size >= 1, f"mim.patch_size must be >= 1, got {mim.patch_size}")
    need(mim.loss_weight == "auto" or (isinstance(mim.loss_weight, float) and mim.loss_weight >= 0),
         f"mim.loss_weight must be auto or a number >= 0, got {mim.loss_weight!r}")
    need(mim.steps in ("weight", "arch", "both"), f"mim.steps must be weight, arch or both, got {mim.steps!r}")
    need(mim.loss in ("mse", "l1", "l2"), f"mim.loss must be mse, l1 or l2, got {mim.loss!r}")
    need(mim.decoder in ("authors", "light"), f"mim.decoder must be authors or light, got {mim.decoder!r}")
    from search_spaces.ops import OPS
    bad = [o for o in cfg.model.exclude_ops if o not in OPS]
    need(not bad, f"model.exclude_ops: unknown ops {bad}; valid: {', '.join(sorted(OPS))}")
    need(0.0 <= cfg.model.drop_path < 1.0, f"model.drop_path must be in [0, 1), got {cfg.model.drop_path}")
    need(cfg.cutout >= 0, f"cutout must be >= 0, got {cfg.cutout}")
    need(0.0 <= cfg.cutout_prob <= 1.0, f"cutout_prob must be in [0, 1], got {cfg.cutout_prob}")
    if cfg.data_dir is not None and cfg.dataset != "digits":
        need(Path(cfg.data_dir).is_dir() or cfg.download,
             f"data_dir {cfg.data_dir} does not exist; pass an existing --data-dir (or --download to fetch)")
    if cfg.nb201_table is not None:
        need(cfg.space == "nb201", "nb201_table is only meaningful with space nb201")
        need(Path(cfg.nb201_table).is_file(), f"nb201_table {cfg.nb201_table} does not exist")


def resolve(overrides: dict[str, Any] | None = None) -> SearchConfig:
    """Merge defaults, paper defaults of the chosen space/method and ``overrides``; validate."""
    overrides = dict(overrides or {})
    space = overrides.get("space", SearchConfig.space)
    method = overrides.get("method", SearchConfig.method)
    merged: dict[str, Any] = {}
    if isinstance(space, str):
        merged = _deep_merge(merged, SPACE_DEFAULTS.get(space, {}))
    if isinstance(method, str) and isinstance(space, str):
        from trials import method_defaults
        merged = _deep_merge(merged, method_defaults(method, space))
    cfg = _build(SearchConfig, _deep_merge(merged, overrides))
    _check_range(cfg)
    return cfg


def from_dict(data: dict[str, Any]) -> SearchConfig:
    """Rebuild a resolved config (e.g. inside a Ray worker) without re-applying defaults."""
    cfg = _build(SearchConfig, data)
    _check_range(cfg)
    return cfg


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> dotted keys (for MLflow params and tables)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
