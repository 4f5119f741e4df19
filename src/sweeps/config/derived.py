"""What follows from a composed config: the metrics it ranks on, the keys that apply to it, and its hash.

`config_hash()` is how a rerun recognises a finished job (resume); `applicable()` is the config as
logged, without the keys that do nothing for this job.
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from sweeps.config import keys
from sweeps.config.schema import DATASETS, OptimizerName, RegKind, Validation


def objectives(cfg: DictConfig) -> list[str]:
    """The metrics `optimized_metric` names, the ranking one first (one, or a list of several)."""
    value = cfg.optimized_metric
    return [str(m) for m in value] if isinstance(value, (list, tuple, ListConfig)) else [str(value)]


def ranked_metric(cfg: DictConfig) -> str:
    """The one metric a job returns and reports rank by: the first of `objectives`."""
    return objectives(cfg)[0]


def objectives_param(value: Optional[str]) -> list[str]:
    """`objectives` back from the `optimized_metric` param a job logged (`a,b` for several)."""
    return [m for m in (value or "").split(",") if m]


def to_plain(cfg: DictConfig) -> dict:
    """The resolved config as plain Python (enums as their names)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


# The keys that apply to some jobs only (every other key always applies), and when they do.
# `rate` always applies: 0 is how a job says it has no penalty (the report's plots read it).
_APPLIES_WHEN = {
    "data.root": lambda c: DATASETS[c.data.name].files,
    **{f"data.{key}": (lambda c, key=key: key in DATASETS[c.data.name].keys)
       for key in {key for facts in DATASETS.values() for key in facts.keys}},
    "model._target_": lambda c: c.model._target_ is not None,
    "model.kwargs": lambda c: c.model._target_ is not None,
    "data.val_split": lambda c: c.data.validation == Validation.split,
    "data.val_seed": lambda c: c.data.validation == Validation.split and c.data.val_split > 0,
    "data.test_seed": lambda c: c.data.test_split is not None or not DATASETS[c.data.name].own_test_set,
    "reg.target": lambda c: c.reg.kind != RegKind.none,
    "reg.layers": lambda c: c.reg.kind != RegKind.none,
    "optimizer.momentum": lambda c: c.optimizer.name == OptimizerName.sgd,
    "optimizer.nesterov": lambda c: c.optimizer.name == OptimizerName.sgd,
    "dropout_type": lambda c: c.dropout > 0,
    "dropout_layers": lambda c: c.dropout > 0,
    "early_stopping.patience": lambda c: c.early_stopping.enabled,
    "early_stopping.min_delta": lambda c: c.early_stopping.enabled,
    "early_stopping.restore_best_weights": lambda c: c.early_stopping.enabled,
    "search": lambda c: c.search.trial is not None,
    "repeat": lambda c: c.repeat > 0,
}


def applicable(cfg: DictConfig) -> dict:
    """The resolved config (as `to_plain`) without the keys that do not apply to this job."""
    plain = to_plain(cfg)
    plain["optimized_metric"] = ",".join(objectives(cfg))  # logged as `a,b` (`objectives_param` reads it back)
    for key, applies in _APPLIES_WHEN.items():
        if not applies(cfg):
            *path, last = key.split(".")
            node = plain
            for part in path:
                node = node[part]
            del node[last]
    return plain


# Keys added after runs were recorded, with the value that means "off": a job that leaves them off
# hashes as it did before they existed, so finished runs of earlier versions are still resumed.
_HASHED_ONCE_SET = {"max_norm": None, "label_smoothing": 0.0, "input_noise": 0.0,
                    "optimizer.weight_decay": 0.0, "optimizer.nesterov": False,
                    "data.path": None, "data.target": None, "data.features": None, "data.task": None, "data._target_": None, "data.kwargs": {},
                    "model._target_": None, "model.kwargs": {}, "backend": "tensorflow"}


def config_hash(cfg: DictConfig) -> str:
    """Stable hash of everything that determines a run's result (used to recognise finished jobs).

    Without a penalty (`reg=none`) the rate changes nothing: it is hashed as 0, so `-m reg=none,l1
    rate=1e-4,1e-3` trains its unpenalized job once (and earlier reg=none runs keep their hash)."""
    plain = {k: v for k, v in to_plain(cfg).items() if k not in keys.NOT_TRAINING}
    if plain["reg"]["kind"] == RegKind.none.value:
        plain["rate"] = 0.0
    for key, off in _HASHED_ONCE_SET.items():  # off: hashed as before the key existed
        *path, last = key.split(".")
        node = plain
        for part in path:
            node = node[part]
        if node.get(last) == off:
            del node[last]
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]
