"""The checks Hydra cannot express: the command line before composing, a composed config before anything is trained.

`check_overrides()` reads the overrides as Hydra's parser does (a group option that does not exist,
a key that is not in the schema); `validate()` rejects out-of-range values, penalties that do nothing
and keys that do not apply, with one line naming the key and the fix (`ConfigError`).
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeps.config.metrics import EPOCH_METRIC, RESULT_METRIC, WEIGHT_METRIC
from sweeps.errors import ConfigError
from sweeps.config.derived import objectives
from sweeps.config.schema import Config, DATASETS, DatasetName, OptimizerName, RegKind, Task, USER_DATA_KEYS, Validation, conf_dir, dotted_keys


def _override_values(override) -> list:
    """The values an override sets: one, or each choice of a sweep (ranges and intervals are typed)."""
    if not override.is_sweep_override():
        return [override.value()]
    values = list(override.sweep_iterator()) if type(override.value()).__name__ == "ChoiceSweep" else []
    return [v for v in values if not (isinstance(v, str) and "${" in v)]


def _check_group_choice(roots: list[Path], override) -> None:
    """`reg=l3`: one line listing the options of the group (Hydra's own message is 12 lines)."""
    group = override.key_or_group
    options = sorted({p.stem for root in roots for p in (root / group).glob("*.yaml")})
    for value in _override_values(override) if override.is_sweep_override() else [override.value()]:
        if isinstance(value, str) and value not in options:
            close = difflib.get_close_matches(value, options, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"{group}={value}: no such option; {hint}choose one of {', '.join(options)}")


def _searched(parsed) -> list[Path]:
    """The folders `hydra.searchpath=[file://my_conf]` adds (your own `model/`, `data/`, ... files)."""
    folders = []
    for override in parsed:
        if override.key_or_group == "hydra.searchpath" and not override.is_sweep_override():
            value = override.value()
            for item in value if isinstance(value, list) else [value]:
                item = str(item)
                folders.append(Path(item[len("file://"):] if item.startswith("file://") else item).expanduser())
    return [f for f in folders if f.is_dir()]


def check_overrides(overrides: list[str]) -> None:
    """A typo, a wrong type or an unknown group option on the command line as one line naming the
    key (Hydra's say more); `hydra.*` is left to Hydra. `+key=` may only add a group (`+experiment=`):
    every key of sweeps is in the schema, so `+rat=1e-3` is a typo, not a new key. `~key` would
    remove a key the schema needs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from sweeps.reporting.mdtext import has_control, visible
    from sweeps.tracking.redact import redact_text

    for item in overrides:  # a newline would split the command the sweep records (and its report)
        if has_control(item):
            raise ConfigError(f"{redact_text(visible(item))}: a value holds a control character (a newline, tab "
                              "or escape); give it on one line without them")
    schema = OmegaConf.structured(Config)
    keys = dotted_keys()
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # a syntax error: Hydra's own message points at the character
    roots = [conf_dir(), *_searched(parsed)]
    groups = {d.relative_to(root).as_posix() for root in roots for d in root.rglob("*") if d.is_dir()}  # incl. variant/<study>
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra"):
            continue
        if override.is_delete():
            raise ConfigError(f"~{key}: keys of sweeps cannot be removed; set a value instead "
                              f"(every key and its default is in src/sweeps/config/schema.py)")
        if key == "backend" and override.is_sweep_override():  # each process takes one, and pool workers are reused
            raise ConfigError(f"backend={','.join(map(str, _override_values(override)))}: one backend per sweep; run a sweep "
                              "per backend (backend=jax, then backend=tensorflow) and compare them with "
                              "python -m sweeps.compare")
        if key in groups:
            _check_group_choice(roots, override)
            continue
        if key.startswith(("model.kwargs.", "data.kwargs.")):  # your builder's or loader's own arguments
            continue
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            plus = "+ adds keys the schema lacks, and every key of sweeps is in it; " if override.is_add() else ""
            raise ConfigError(f"{key}: no such key; {plus}{hint}(every key is listed in src/sweeps/config/schema.py)")
        for value in _override_values(override):
            try:
                OmegaConf.update(schema, key, value, merge=True)
            except OmegaConfBaseException as err:
                reason = str(err).splitlines()[0]
                raise ConfigError(f"{key}={value}: {reason}; see the key's type in src/sweeps/config/schema.py") from None


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value} is invalid: {rule}")


def _check_layers(key: str, layers: Optional[List[int]], n_hidden: int) -> None:
    if layers is None:
        return
    bad = [i for i in layers if not 0 <= i < n_hidden]
    _check(not bad, key, list(layers), f"layer indices must be in 0..{n_hidden - 1} (model has {n_hidden} hidden layers)")


# Keras 3's activation names (`keras.activations`), so a typo fails before TensorFlow is imported;
# tests/test_config.py checks the list against the installed Keras.
ACTIVATIONS = ("celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu", "hard_swish",
               "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish", "relu", "relu6", "selu",
               "sigmoid", "silu", "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus", "sparse_sigmoid",
               "sparsemax", "squareplus", "swish", "tanh", "tanh_shrink", "threshold")


def validate(cfg: DictConfig) -> None:
    """Reject values Hydra's types let through. Called before data is read or a run is opened."""
    _check(math.isfinite(cfg.rate) and cfg.rate >= 0, "rate", cfg.rate, "use a finite value >= 0, e.g. rate=1e-4")
    if cfg.reg.kind != RegKind.none and cfg.rate == 0:  # a penalty of strength 0 would silently train none
        raise ConfigError(f"reg={cfg.reg.kind.value} needs rate > 0, e.g. rate=1e-4 (reg=none trains without a penalty)")
    _check(cfg.seed >= 0, "seed", cfg.seed, "use an integer >= 0, e.g. seed=0")
    _check(0 <= cfg.optimizer.momentum < 1, "optimizer.momentum", cfg.optimizer.momentum, "use a value in [0, 1), e.g. 0.9")
    for key in ("val_seed", "test_seed"):
        _check(cfg.data[key] >= 0, f"data.{key}", cfg.data[key], "use an integer >= 0")
    _check(cfg.data.n_samples >= 20, "data.n_samples", cfg.data.n_samples, "use at least 20 points (circles)")
    _check(cfg.data.noise >= 0, "data.noise", cfg.data.noise, "use a value >= 0, e.g. 0.1")
    _check(0 < cfg.data.factor < 1, "data.factor", cfg.data.factor, "use a value in (0, 1), e.g. 0.5")
    _check(bool(cfg.tracking.experiment.strip()), "tracking.experiment", repr(cfg.tracking.experiment),
           "give the experiment a name, e.g. tracking.experiment=sweeps")
    _check(bool(EPOCH_METRIC.match(cfg.early_stopping.monitor)), "early_stopping.monitor", cfg.early_stopping.monitor,
           "watch a per-epoch metric: val_data_loss, val_loss, val_accuracy, val_mae, data_loss, loss, accuracy or mae")
    _check(0 <= cfg.dropout < 1, "dropout", cfg.dropout, "use a value in [0, 1), e.g. dropout=0.2")
    _check_todays_regularizers(cfg)
    _check(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "use an integer >= 1, e.g. batch_size=128")
    _check(cfg.epochs >= 1, "epochs", cfg.epochs, "use an integer >= 1, e.g. epochs=10")
    _check(math.isfinite(cfg.optimizer.lr) and cfg.optimizer.lr > 0, "optimizer.lr", cfg.optimizer.lr,
           "use a finite value > 0, e.g. optimizer.lr=1e-3")
    _check(0 <= cfg.data.val_split < 1, "data.val_split", cfg.data.val_split, "use a fraction in [0, 1)")
    ts = cfg.data.test_split
    _check(ts is None or 0 < ts < 1, "data.test_split", ts, "use a fraction in (0, 1) or null")
    lim = cfg.data.limit
    _check(lim is None or lim >= 2, "data.limit", lim, "use an integer >= 2 or null")
    _check(len(cfg.model.hidden) >= 1, "model.hidden", list(cfg.model.hidden), "give at least one width, e.g. [64,64]")
    _check(all(w >= 1 for w in cfg.model.hidden), "model.hidden", list(cfg.model.hidden), "widths must be >= 1")
    close = difflib.get_close_matches(cfg.model.activation, ACTIVATIONS, n=1)
    _check(cfg.model.activation in ACTIVATIONS, "model.activation", cfg.model.activation,
           f"use a Keras activation{', e.g. ' + close[0] if close else ''} (relu, tanh, sigmoid, elu, gelu, ...)")
    _check(cfg.early_stopping.patience >= 0, "early_stopping.patience", cfg.early_stopping.patience, "use >= 0")
    spe = cfg.steps_per_execution
    _check(spe is None or spe >= 1, "steps_per_execution", spe, "use an integer >= 1 or null (automatic)")
    _check(cfg.threads is None or cfg.threads >= 1, "threads", cfg.threads, "use an integer >= 1 or null")
    _check(cfg.cv.folds == 0 or cfg.cv.folds >= 2, "cv.folds", cfg.cv.folds, "use 0 (off) or at least 2")
    _check(cfg.repeat == 0 or cfg.repeat >= 2, "repeat", cfg.repeat, "use 0 (off) or at least 2, e.g. repeat=3")
    _check_objectives(cfg)
    if cfg.model._target_ is None:  # a builder's layers are counted when it builds (`models.Regularization`)
        n_hidden = len(cfg.model.hidden)
        _check_layers("reg.layers", cfg.reg.layers, n_hidden)
        _check_layers("dropout_layers", cfg.dropout_layers, n_hidden)
    _check_your_work(cfg)
    _check_every_value(cfg)
    _check_metrics_apply(cfg)
    _check_store_settings(cfg.tracking)


def _check_objectives(cfg: DictConfig) -> None:
    value = cfg.optimized_metric
    names = objectives(cfg)
    shown = value if isinstance(value, str) else f"[{','.join(names)}]"
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"optimized_metric={shown}: name one metric, or a list of different ones, "
                          "e.g. optimized_metric=[val_data_loss,hidden_0/rel_sparsity]")
    for name in names:
        _check(bool(RESULT_METRIC.match(name)) or (len(names) > 1 and bool(WEIGHT_METRIC.match(name))),
               "optimized_metric", shown if len(names) > 1 else name,
               "use a logged result such as val_data_loss, val_accuracy, test_accuracy, test_mae or generalization_gap"
               + ("; beside it a kernel statistic (hidden_0/rel_sparsity, hidden_0/kernel_l1) or active_weights"
                  if len(names) > 1 else ""))
        layer = re.match(r"^hidden_(\d+)/", name)
        if layer and cfg.model._target_ is None and int(layer.group(1)) >= len(cfg.model.hidden):
            raise ConfigError(f"optimized_metric={shown}: the model has no layer hidden_{layer.group(1)} (its hidden "
                              f"layers are hidden_0..hidden_{len(cfg.model.hidden) - 1}); name one of those")


def _check_todays_regularizers(cfg: DictConfig) -> None:
    """Weight decay, Nesterov, max-norm, label smoothing and input noise: in range, and never a value
    that silently does nothing (as a penalty kind with rate 0)."""
    opt = cfg.optimizer
    _check(opt.weight_decay >= 0, "optimizer.weight_decay", opt.weight_decay, "use a value >= 0, e.g. 1e-4")
    if opt.name == OptimizerName.adamw and opt.weight_decay == 0:
        raise ConfigError("optimizer=adamw needs optimizer.weight_decay > 0, e.g. optimizer.weight_decay=1e-4 "
                          "(with 0 it is Adam: optimizer=adam)")
    if opt.nesterov and not (opt.name == OptimizerName.sgd and opt.momentum > 0):
        raise ConfigError("optimizer.nesterov=true needs optimizer=sgd with optimizer.momentum > 0, e.g. "
                          "optimizer.momentum=0.9")
    _check(cfg.max_norm is None or cfg.max_norm > 0, "max_norm", cfg.max_norm, "use a value > 0, e.g. max_norm=3, "
           "or leave it out (no constraint)")
    _check(0 <= cfg.label_smoothing < 1, "label_smoothing", cfg.label_smoothing, "use a value in [0, 1), e.g. 0.1")
    _check(cfg.input_noise >= 0, "input_noise", cfg.input_noise, "use a standard deviation >= 0, e.g. input_noise=0.1")


def _check_target(key: str, target: Optional[str]) -> None:
    """`model._target_` / `data._target_`: a dotted name whose package is importable (not imported here:
    the job imports it, beside TensorFlow)."""
    import importlib.util

    if not target or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", target):
        raise ConfigError(f"{key}={target}: name a function as package.module.function, e.g. "
                          f"{key}=my_pkg.models.build")
    top = target.split(".", 1)[0]
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(f"{key}={target}: no package {top} to import; put its folder on PYTHONPATH or "
                          f"pip install -e it")


def _plain_value(value: Any) -> Any:
    """A value as the user typed it (an enum's name, a list's items)."""
    plain = _plain(value)
    return plain.value if isinstance(plain, Enum) else plain


def _check_your_work(cfg: DictConfig) -> None:
    """Your data and your model: what each needs is given, and nothing is given that would do nothing."""
    data, name = cfg.data, cfg.data.name
    for key in DATASETS[name].needs:
        if data[key] is None:
            example = {"path": "data.path=/path/to/file", "target": "data.target=<column>",
                       "_target_": "data._target_=my_pkg.load"}[key]
            raise ConfigError(f"data={name.value} needs data.{key}, e.g. {example}")
    for key, readers in USER_DATA_KEYS.items():
        if key == "kwargs":
            if data.kwargs and name not in readers:
                raise ConfigError(f"data.kwargs does nothing with data={name.value}; it goes to data=custom's loader only")
        elif data[key] is not None and name not in readers:
            raise ConfigError(f"data.{key}={_plain_value(data[key])} does nothing with data={name.value}; it is read by "
                              f"data={' / '.join(n.value for n in readers)} only (leave it out, or pick one of those)")
    if name == DatasetName.custom:
        _check_target("data._target_", data._target_)
    if data.path is not None and not Path(data.path).expanduser().is_file():
        raise ConfigError(f"data.path={data.path}: no such file; give the path of your "
                          f"{'CSV' if name == DatasetName.csv else '.npz'} file")
    model = cfg.model
    if model._target_ is None:
        if model.name == "custom":
            raise ConfigError("model=custom needs model._target_=my_pkg.models.build (your builder: see "
                              "docs/your_work.md)")
        if model.kwargs:
            raise ConfigError("model.kwargs does nothing without model._target_ (the MLP takes model.hidden, "
                              "model.activation, model.batchnorm)")
    else:
        _check_target("model._target_", model._target_)


# Every integer a job uses ends up in TensorFlow or NumPy as a 32-bit value (seeds, sizes, counts).
INT_LIMIT = 2**31 - 1


PARAM_LIMIT = 6000  # MLflow keeps at most this many characters of a param's value


_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")  # a path separator or control character in a name


def _check_every_value(cfg: DictConfig) -> None:
    """The range checks that hold for every key of a kind: integers within 32 bits, floats finite,
    values short enough to be logged whole (one check per class, so a new key is covered too)."""
    plain = {name: _plain(cfg[name]) for name in typing.get_type_hints(Config)}  # not Hydra's own node, if any
    for key in dotted_keys():
        value = _select(plain, key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool) or item is None:
                continue
            if isinstance(item, int) and abs(item) > INT_LIMIT:
                raise ConfigError(f"{key}={item} is out of range: use an integer of at most {INT_LIMIT} "
                                  "(TensorFlow and NumPy take 32-bit values)")
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{key}={item} is invalid: use a finite number")
        if not isinstance(value, dict) and len(str(value)) > PARAM_LIMIT:
            raise ConfigError(f"{key}: its value has {len(str(value))} characters and MLflow keeps at most "
                              f"{PARAM_LIMIT} of a param; shorten it")
    _check(not _UNSAFE_NAME.search(cfg.model.name), "model.name", repr(cfg.model.name),
           "a name may not hold / or \\ or control characters (it names the run's files); e.g. model.name=mlp_64_32")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True, enum_to_str=True) if OmegaConf.is_config(value) else value


def _select(plain: dict, key: str) -> Any:
    node: Any = plain
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _watched_metrics(cfg: DictConfig) -> list[tuple[str, str]]:
    """(key, metric) of the metrics a job must log: the one it returns, and the one early stopping watches."""
    watched = [("optimized_metric", metric) for metric in objectives(cfg)]
    return watched + [("early_stopping.monitor", cfg.early_stopping.monitor)] if cfg.early_stopping.enabled else watched


def check_task(cfg: DictConfig, task: Optional[str]) -> None:
    """What needs class labels, or numbers, against the data's task (None: not known before the data
    is read, as for your own data; the job checks again with the task its data has)."""
    if task is None:
        return
    regression = task == Task.regression.value
    what = f"data={cfg.data.name.value}" if cfg.data.task is None else f"data.task={cfg.data.task.value}"
    if cfg.label_smoothing > 0 and regression:
        raise ConfigError(f"label_smoothing={cfg.label_smoothing}: {what} is a regression "
                          "(no class labels to smooth); leave label_smoothing out")
    for key, metric in _watched_metrics(cfg):
        if "accuracy" in metric and regression:
            raise ConfigError(f"{key}={metric}: {what} is a regression (it logs mae, not "
                              f"accuracy); use {metric.replace('accuracy', 'mae')}")
        if "mae" in metric and not regression:
            raise ConfigError(f"{key}={metric}: {what} is a classification (it logs accuracy, "
                              f"not mae); use {metric.replace('mae', 'accuracy')}")


def known_task(data: DictConfig) -> Optional[str]:
    """The task of `data` as the config says it (None: your own data, until its labels are read)."""
    if data.task is not None:
        return data.task.value
    facts = DATASETS[data.name]
    if facts.user:
        return None
    return (Task.regression if facts.regression else Task.classification).value


def _check_metrics_apply(cfg: DictConfig) -> None:
    """Metrics named by `optimized_metric` and `early_stopping.monitor` must be ones this job logs:
    a validation metric needs validation data, accuracy a classifier, MAE a regression, cv_* folds."""
    check_task(cfg, known_task(cfg.data))
    no_validation = cfg.data.validation == Validation.split and cfg.data.val_split == 0
    for key, metric in _watched_metrics(cfg):
        if metric.startswith(("val_", "best_val_")) and no_validation:
            raise ConfigError(f"{key}={metric}: data.val_split=0 leaves no validation data to compute it; use "
                              "data.val_split=0.1, data.validation=test, or a test_ or final_train_ metric")
        if metric.startswith("cv_") and not cfg.cv.folds:
            raise ConfigError(f"{key}={metric}: only a cross-validated job logs it; add cv.folds=5 or pick "
                              "val_data_loss")


# Tracking URI schemes MLflow opens (a `+driver` suffix is allowed: postgresql+psycopg://)
STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


# Artifact locations that need an extra package: scheme -> (module, pip package)
ARTIFACT_DRIVERS = {"s3": ("boto3", "boto3"), "gs": ("google.cloud.storage", "google-cloud-storage"),
                    "wasbs": ("azure.storage.blob", "azure-storage-blob"),
                    "abfss": ("azure.storage.filedatalake", "azure-storage-file-datalake"),
                    "hdfs": ("pyarrow", "pyarrow")}


def _check_store_settings(tracking: DictConfig) -> None:
    """`tracking.uri` and `tracking.artifact_root` that cannot work, before anything is trained."""
    import importlib.util

    uri = tracking.uri
    if uri is not None:
        _check(bool(uri.strip()), "tracking.uri", repr(uri),
               "leave it out (the store is then $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db) or give a URI")
        scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
        if scheme and scheme not in STORE_SCHEMES + ("file",):  # file: and plain folders get their own message
            from sweeps.tracking.redact import redact_uri

            raise ConfigError(f"tracking.uri={redact_uri(uri)}: MLflow cannot open a {scheme}:// store; use "
                              "sqlite:///path/mlflow.db, postgresql://..., mysql://... or http(s)://server")
    root = tracking.artifact_root
    scheme = root.split("://", 1)[0].lower() if root and "://" in root else ""
    if scheme in ARTIFACT_DRIVERS:
        module, package = ARTIFACT_DRIVERS[scheme]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ConfigError(f"tracking.artifact_root={root}: {scheme}:// needs the {package} package; "
                              f"pip install {package} (or leave tracking.artifact_root out)")
