"""The search config: every number of a search is a field, resolved and validated in one place.

Resolution order (later wins): dataclass defaults < the space's paper defaults < the method's preset <
the YAML file < ``--set`` / CLI flags. The core fields (data, loop, model, both optimisers) are here;
each method module registers its own block (``pc``, ``drnas``, ``rf``, ``mim``) with
``trials.registry.register_section``, and ``SearchConfig`` is the core plus those blocks.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

from trials.config import build, deep_merge, need
from trials.batches import DataConfig


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
class CoreSearchConfig:
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
    collapse_degenerate: str = "warn"  # a degenerate cell (every edge none, output unreachable, a node with no
                                       # input): warn (flag it) | fail (stop the trial as stopped_collapse)
    relaxation: str = "softmax"      # how alpha becomes edge weights: softmax (DARTS) or a registered piece's
                                     # (dirichlet: DrNAS)
    cutout: int = 0                  # search-time cutout side on both splits (RobustDARTS: 16 with drop-path); 0: off
    cutout_prob: float = 1.0         # per-image probability; ramped like drop-path when model.drop_path > 0
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: WeightOptimConfig = field(default_factory=WeightOptimConfig)
    arch: ArchOptimConfig = field(default_factory=ArchOptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sections(self) -> dict[str, Any]:
        """The method blocks of this config (``pc``, ``drnas``, ...) by name."""
        from trials.registry import SECTIONS

        return {name: getattr(self, name) for name in SECTIONS}


def search_config_class() -> type:
    """``SearchConfig``: the core fields plus one field per registered method block (recomposed only
    when a block is registered later, e.g. by a method module of the user's own)."""
    from trials.catalog import load_methods
    from trials.registry import SECTIONS

    load_methods()
    return _compose(tuple(SECTIONS.items()))


@functools.cache
def _compose(sections: tuple[tuple[str, type], ...]) -> type:
    fields = [(name, sec, field(default_factory=sec)) for name, sec in sections]
    cls = dataclasses.make_dataclass("SearchConfig", fields, bases=(CoreSearchConfig,))
    cls.__module__ = "trials"
    cls.__doc__ = "Core search fields plus the method blocks: " + ", ".join(name for name, _ in sections)
    return cls


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


def check(cfg: Any) -> None:
    """Ranges of the core fields, then each method block's own ``check``."""
    from search_spaces import SPACES
    from search_spaces.ops import OPS
    from trials.registry import list_methods, relaxations

    need(cfg.method in list_methods(), f"unknown method {cfg.method!r}; valid: {', '.join(list_methods())}")
    need(cfg.space in SPACES, f"unknown space {cfg.space!r}; valid: {', '.join(SPACES)}")
    need(cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}")
    cfg.data.check()
    need(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    need(0.0 < cfg.train_portion < 1.0, f"train_portion must be in (0, 1), got {cfg.train_portion}")
    need(cfg.max_steps_per_epoch is None or cfg.max_steps_per_epoch >= 1,
         f"max_steps_per_epoch must be >= 1 or null, got {cfg.max_steps_per_epoch}")
    need(cfg.hessian_every >= 0 and cfg.hessian_batches >= 1, "hessian_every must be >= 0, hessian_batches >= 1")
    need(cfg.collapse_skip is None or cfg.collapse_skip >= 1, f"collapse_skip must be >= 1, got {cfg.collapse_skip}")
    need(cfg.collapse_degenerate in ("warn", "fail"),
         f"collapse_degenerate must be warn or fail, got {cfg.collapse_degenerate!r}")
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
    need(cfg.relaxation in relaxations(),
         f"relaxation must be {' or '.join(relaxations())}, got {cfg.relaxation!r}")
    bad = [o for o in cfg.model.exclude_ops if o not in OPS]
    need(not bad, f"model.exclude_ops: unknown ops {bad}; valid: {', '.join(sorted(OPS))}")
    need(0.0 <= cfg.model.drop_path < 1.0, f"model.drop_path must be in [0, 1), got {cfg.model.drop_path}")
    need(cfg.cutout >= 0, f"cutout must be >= 0, got {cfg.cutout}")
    need(0.0 <= cfg.cutout_prob <= 1.0, f"cutout_prob must be in [0, 1], got {cfg.cutout_prob}")
    for section in cfg.sections().values():
        section.check(cfg)


def resolve(overrides: dict[str, Any] | None = None) -> Any:
    """Merge defaults, paper defaults of the chosen space/method and ``overrides``; validate."""
    from trials.registry import list_methods, method

    overrides = dict(overrides or {})
    space = overrides.get("space", CoreSearchConfig.space)
    name = overrides.get("method", CoreSearchConfig.method)
    merged: dict[str, Any] = {}
    if isinstance(space, str):
        merged = deep_merge(merged, SPACE_DEFAULTS.get(space, {}))
    if isinstance(name, str) and isinstance(space, str) and name in list_methods():
        merged = deep_merge(merged, method(name)(space))
    cfg = build(search_config_class(), deep_merge(merged, overrides))
    check(cfg)
    return cfg


def from_dict(data: dict[str, Any]) -> Any:
    """Rebuild a resolved config (e.g. inside a Ray worker) without re-applying defaults."""
    cfg = build(search_config_class(), data)
    check(cfg)
    return cfg
