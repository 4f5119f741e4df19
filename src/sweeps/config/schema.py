"""Typed config schema (Hydra structured configs): every key, its type and its default, and the facts of each dataset.

The dataclasses below are the single place where every key, its type and its default live.
`conf/` only selects options; a typo (`rat=1e-3`) or a wrong type (`rate=abc`) fails at compose
time naming the key. `DATASETS` says what the rest of `sweeps` needs to know of each dataset.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from sweeps.config.metrics import RANK_METRIC
from sweeps.errors import ConfigError


class DatasetName(Enum):
    fashion_mnist = "fashion_mnist"
    mnist = "mnist"
    fashion_mnist_csv = "fashion_mnist_csv"
    california_housing = "california_housing"
    digits = "digits"
    circles = "circles"
    csv = "csv"  # your table: data.path, data.target
    npz = "npz"  # your arrays: data.path holding x_train, y_train (and x_test, y_test)
    custom = "custom"  # your loader: data._target_


class Task(Enum):
    classification = "classification"
    regression = "regression"


class Scale(Enum):
    divide255 = "divide255"
    standardize = "standardize"
    none = "none"


class RegKind(Enum):
    none = "none"
    l1 = "l1"
    l2 = "l2"
    l1_l2 = "l1_l2"


class RegTarget(Enum):
    kernel = "kernel"
    activity = "activity"
    bias = "bias"


class DropoutType(Enum):
    standard = "standard"
    gaussian = "gaussian"


class OptimizerName(Enum):
    rmsprop = "rmsprop"
    adam = "adam"
    adamw = "adamw"
    nadam = "nadam"
    sgd = "sgd"


class Backend(Enum):
    """Keras' backend (`sweeps.backends`); PyTorch is not offered: not installed here, so untested."""

    tensorflow = "tensorflow"
    jax = "jax"


class Validation(Enum):
    split = "split"
    test = "test"


@dataclass
class DataConfig:
    name: DatasetName = MISSING  # which loader: set by the data= group option
    root: Optional[str] = None  # folder holding the files; else $SWEEPS_DATA_DIR/<name>, system, cache
    scale: Scale = Scale.divide255  # divide255 | standardize (fitted on the training split) | none
    val_split: float = 0.1  # hold-out fraction of the training set for validation
    val_seed: int = 0  # seed of the validation hold-out
    validation: Validation = Validation.split  # split: hold out val_split | test: validate on the test set
    test_split: Optional[float] = None  # split a test set off the training set (null: the dataset's own)
    test_seed: int = 0  # seed of that test split
    limit: Optional[int] = None  # use only the first N training examples (smoke runs)
    train_file: Optional[str] = None  # CSV layouts: training file name inside the data folder
    test_file: Optional[str] = None  # CSV layouts: test file name inside the data folder
    n_samples: int = 500  # circles: number of points
    noise: float = 0.1  # circles: Gaussian noise added to the points
    factor: float = 0.5  # circles: radius of the inner ring relative to the outer one
    path: Optional[str] = None  # csv, npz: the file
    target: Optional[str] = None  # csv: the column to predict
    features: Optional[List[str]] = None  # csv: the feature columns; null: every column but the target
    task: Optional[Task] = None  # csv, npz, custom: classification | regression; null: from the labels
    _target_: Optional[str] = None  # custom: your loader, my_pkg.load(**kwargs) -> arrays (see docs/your_work.md)
    kwargs: Dict[str, Any] = field(default_factory=dict)  # custom: keyword arguments of the loader (+data.kwargs.k=v)


@dataclass
class ModelConfig:
    name: str = "mlp"  # label for the architecture (presets name themselves)
    hidden: List[int] = field(default_factory=lambda: [512, 512])  # width of each hidden layer
    activation: str = "relu"  # any Keras activation name
    batchnorm: bool = False  # BatchNormalization after each hidden layer
    _target_: Optional[str] = None  # your builder, my_pkg.build(spec, **kwargs) -> keras.Model; null: the MLP
    kwargs: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the builder (+model.kwargs.k=v)


@dataclass
class RegConfig:
    kind: RegKind = RegKind.none  # none | l1 | l2 | l1_l2; strength is the top-level `rate`
    target: RegTarget = RegTarget.kernel  # kernel | activity | bias
    layers: Optional[List[int]] = None  # hidden layers (0-based) that get the penalty; null = all


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.rmsprop  # rmsprop | adam | adamw | nadam | sgd
    lr: float = 1e-3  # learning rate
    momentum: float = 0.0  # SGD only
    nesterov: bool = False  # SGD only: Nesterov momentum (needs momentum > 0)
    weight_decay: float = 0.0  # decoupled weight decay, any optimizer: each step w -= lr * weight_decay * w (kernels)


@dataclass
class EarlyStoppingConfig:
    enabled: bool = False  # stop when `monitor` stops improving
    monitor: str = RANK_METRIC  # per-epoch metric watched
    patience: int = 3  # epochs without improvement before stopping
    min_delta: float = 0.0  # smallest change that counts as improvement
    restore_best_weights: bool = True  # keep the best epoch's weights, not the last


@dataclass
class CVConfig:
    folds: int = 0  # k-fold cross-validation over all training data (0 = off); one child run per fold


@dataclass
class SearchConfig:
    study: Optional[str] = None  # the Optuna study this job is a trial of (set by hydra/sweeper=optuna)
    storage: Optional[str] = None  # that study's storage URL (how a worker anywhere reaches its trial)
    trial: Optional[int] = None  # the trial's number in the study
    trial_id: Optional[int] = None  # the trial's id in the storage (what reports go to)
    pruner: str = "none"  # the study's pruner (Optuna keeps it in the process, not in the storage)


@dataclass
class TrackingConfig:
    uri: Optional[str] = "${oc.env:MLFLOW_TRACKING_URI,null}"  # null: sqlite:///<cwd>/mlruns/mlflow.db
    experiment: str = "sweeps"  # MLflow experiment name
    artifact_root: Optional[str] = None  # null: mlruns/artifacts next to a SQLite store
    log_model: bool = True  # save the trained model as an MLflow Keras model at `model`
    lock_wait_s: float = 300.0  # a SQLite store locked by another process (a backup): wait this long, past MLflow's 20 s


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)  # data= group
    model: ModelConfig = field(default_factory=ModelConfig)  # model= group
    reg: RegConfig = field(default_factory=RegConfig)  # reg= group
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # optimizer= group
    rate: float = 0.0  # regularization strength (the L1/L2 factor) for reg=
    dropout: float = 0.0  # dropout rate after hidden layers (0 = none)
    dropout_type: DropoutType = DropoutType.standard  # standard (Dropout) | gaussian (GaussianDropout)
    dropout_layers: Optional[List[int]] = None  # hidden layers (0-based) followed by dropout; null = all
    max_norm: Optional[float] = None  # max-norm constraint: each hidden unit's incoming weights kept within this L2 norm
    label_smoothing: float = 0.0  # classification: targets (1 - s) one-hot + s / classes (the data loss follows)
    input_noise: float = 0.0  # std of Gaussian noise added to the inputs while training (0 = none)
    batch_size: int = 32  # mini-batch size
    epochs: int = 10  # training epochs
    seed: int = 0  # seeds Python, NumPy and TensorFlow
    repeat: int = 0  # grid multirun: each configuration this many times, seed and data.val_seed +0..+K-1 (0 = off)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    cv: CVConfig = field(default_factory=CVConfig)  # k-fold cross-validation
    # The metric the run returns, a search optimises and reports rank by; or a list of two or more
    # ([val_data_loss, hidden_0/rel_sparsity]): a search's objectives and the report's front, the first ranks.
    optimized_metric: Any = RANK_METRIC
    resume: bool = True  # multirun: skip jobs whose config already FINISHED in the experiment
    # Keras' backend for every job and pack (set before Keras' first import in each process; one per
    # sweep): tensorflow | jax (`pip install "jax[cpu]"`, which `make install` does)
    backend: Backend = Backend.tensorflow
    threads: Optional[int] = None  # TensorFlow CPU threads per job; null: cores / jobs running at once
    # Save the training state every epoch so a job SLURM requeues continues after its last finished epoch
    # in the same run (`sweeps.training.checkpoint`); null: on inside a SLURM task of a sweep
    checkpoint: Optional[bool] = None
    steps_per_execution: Optional[int] = None  # batches per call into TensorFlow (same updates); null: 64
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)  # set by hydra/sweeper=optuna; leave alone


def register_configs() -> None:
    """Put the schema into Hydra's ConfigStore (`conf/config.yaml` lists it first).

    Our Hydra plugins (`hydra/sweeper=grid`, ...) register themselves in `hydra_plugins.sweeps_plugins`.
    """
    ConfigStore.instance().store(name="sweeps_schema", node=Config)


def conf_dir() -> Path:
    """`conf/` inside an installed wheel, else at the top of the source checkout."""
    package = Path(__file__).resolve().parents[1]  # sweeps/ (this file is sweeps/config/schema.py)
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise ConfigError(f"conf/config.yaml not found next to {package}: reinstall with `make install`")


def dotted_keys(schema: Optional[type] = None, prefix: str = "") -> list[str]:
    """Every key of the schema, dotted (`data.root`, `model.hidden`, ...)."""
    schema = schema or Config
    keys = []
    for name, kind in typing.get_type_hints(schema).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(kind):
            keys += dotted_keys(kind, f"{prefix}{name}.")
    return keys


@dataclass(frozen=True)
class DatasetFacts:
    """What the rest of `sweeps` needs to know of a dataset, decided here only (its reader: `data._read_raw`)."""

    files: bool = False  # read from files under `data.root` (found on the system or downloaded)
    own_test_set: bool = False  # ships a test set (else `data.test_split` with `data.test_seed` makes one)
    regression: bool = False  # its target is a number (else a class)
    user: bool = False  # read from what the user names (`data.path`, `data._target_`); task from its labels
    keys: tuple = ()  # the `data.*` keys it reads that not every dataset does
    needs: tuple = ()  # of those, the ones a job must give (they have no default)


DATASETS = {
    DatasetName.fashion_mnist: DatasetFacts(files=True, own_test_set=True),
    DatasetName.mnist: DatasetFacts(files=True, own_test_set=True),
    DatasetName.fashion_mnist_csv: DatasetFacts(files=True, own_test_set=True, keys=("train_file", "test_file")),
    DatasetName.california_housing: DatasetFacts(files=True, regression=True),
    DatasetName.digits: DatasetFacts(),
    DatasetName.circles: DatasetFacts(keys=("n_samples", "noise", "factor")),
    DatasetName.csv: DatasetFacts(user=True, keys=("path", "target", "features", "task"), needs=("path", "target")),
    DatasetName.npz: DatasetFacts(user=True, keys=("path", "task"), needs=("path",)),
    DatasetName.custom: DatasetFacts(user=True, keys=("_target_", "kwargs", "task"), needs=("_target_",)),
}


# The data keys of your data, and the options that read them (a key set for any other does nothing).
USER_DATA_KEYS = {key: tuple(name for name, facts in DATASETS.items() if key in facts.keys)
                  for key in ("path", "target", "features", "task", "_target_", "kwargs")}
