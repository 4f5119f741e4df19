"""The model under study: our MLP (hidden Dense layers with the configured penalties, batch norm and
dropout), or what a builder of `model._target_` returns (`model=cnn` is ours, built the same way).

Layer names of the MLP are stable (`hidden_0`, `bn_0`, `dropout_0`, ..., `output`) so that tests,
weight statistics and the MLflow model summary can point at them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import keras
from omegaconf import DictConfig, OmegaConf

from sweeps.training import regularizers
from sweeps.config import OptimizerName, RegKind
from sweeps.errors import ConfigError


def build(cfg: DictConfig, data) -> keras.Model:
    """The job's model: the MLP, or `model._target_(spec, **model.kwargs)`, checked (see `ModelSpec`)."""
    if cfg.model._target_ is None:
        return build_model(cfg, data.input_dim, data.n_classes)
    from sweeps.training.data import locate

    where = f"model._target_={cfg.model._target_}"
    builder = locate(where, cfg.model._target_)
    spec = ModelSpec.of(cfg, data)
    kwargs = OmegaConf.to_container(cfg.model.kwargs, resolve=True)
    try:
        model = builder(spec, **kwargs)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's code: one line naming it, not their traceback
        reason = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(f"{where} raised {type(err).__name__}: {reason}; fix the builder") from None
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{where} returned {type(model).__name__}, not a keras.Model; return the model it builds")
    spec.check(where, model)
    return model


@dataclass
class Regularization:
    """What the job's config asks of the hidden layers a builder makes; it records what was asked,
    so that a setting the builder never applies is refused instead of silently doing nothing.

    - `dense_kwargs(i)` / `conv_kwargs(i, rank=2)`: the penalty (`reg`, `rate`, `reg.target`, if `reg.layers`
      selects layer i) and the max-norm constraint, as keyword arguments of `Dense` / `Conv*D`;
    - `dropout(i)`: the dropout layer to put after hidden layer i (`keras.layers.Identity` if none);
    - `input_noise()`: the Gaussian noise layer for the inputs (`Identity` if none).
    """

    cfg: DictConfig
    asked: dict = field(default_factory=lambda: {"kwargs": -1, "dropout": -1, "noise": False})

    def dense_kwargs(self, index: int) -> dict:
        return self._kwargs(index, axis=0)  # Dense kernels are [in, out]: a unit's weights are a column

    def conv_kwargs(self, index: int, rank: int = 2) -> dict:
        """For a `Conv{rank}D`: its kernel is [*window, in, out], a filter's weights all axes but the last."""
        return self._kwargs(index, axis=list(range(rank + 1)))

    def _kwargs(self, index: int, axis) -> dict:
        self.asked["kwargs"] = max(self.asked["kwargs"], index)
        extra = regularizers.dense_kwargs(self.cfg.reg.kind, self.cfg.reg.target, self.cfg.rate, self.cfg.reg.layers,
                                          index)
        return {**extra, **regularizers.constraint_kwargs(self.cfg.max_norm, axis)}

    def dropout(self, index: int, name: Optional[str] = None) -> keras.layers.Layer:
        self.asked["dropout"] = max(self.asked["dropout"], index)
        name = name or f"dropout_{index}"
        if self.cfg.dropout > 0 and regularizers.selected(self.cfg.dropout_layers, index):
            return regularizers.dropout(self.cfg.dropout_type, self.cfg.dropout, name=name)
        return keras.layers.Identity(name=name)

    def input_noise(self) -> keras.layers.Layer:
        self.asked["noise"] = True
        if self.cfg.input_noise > 0:
            return keras.layers.GaussianNoise(self.cfg.input_noise, name="input_noise")
        return keras.layers.Identity(name="input_noise")

    def check(self, where: str) -> None:
        """Every regularizer the config sets was asked for, on layers the model has."""
        cfg, n_kwargs, n_dropout = self.cfg, self.asked["kwargs"] + 1, self.asked["dropout"] + 1
        how = "pass **spec.reg.dense_kwargs(i) (or conv_kwargs) to its hidden layers"
        if cfg.reg.kind != RegKind.none and not n_kwargs:
            raise ConfigError(f"reg={cfg.reg.kind.value}: {where} never asks for the penalty, so it would train "
                              f"none; {how} (see docs/your_work.md)")
        if cfg.max_norm is not None and not n_kwargs:
            raise ConfigError(f"max_norm={cfg.max_norm}: {where} never asks for the constraint; {how}")
        if cfg.dropout > 0 and not n_dropout:
            raise ConfigError(f"dropout={cfg.dropout}: {where} never asks for a dropout layer; put spec.reg.dropout(i) "
                              "after its hidden layers")
        if cfg.input_noise > 0 and not self.asked["noise"]:
            raise ConfigError(f"input_noise={cfg.input_noise}: {where} never asks for it; apply "
                              "spec.reg.input_noise() to its inputs")
        for key, layers, n in (("reg.layers", cfg.reg.layers, n_kwargs), ("dropout_layers", cfg.dropout_layers, n_dropout)):
            bad = [i for i in (layers or []) if not 0 <= i < n]
            if bad and n:
                raise ConfigError(f"{key}={list(layers)} is invalid: {where} has hidden layers 0..{n - 1}")


@dataclass
class ModelSpec:
    """What a builder of `model._target_` gets: `build(spec, **model.kwargs) -> keras.Model`.

    input_shape: the features of one example (flat: `(n_features,)`); image_shape: (height, width,
    channels) when those features are an image's pixels (reshape to it for convolutions), else None;
    outputs: classes (softmax) or 1 (linear); task: "classification" | "regression";
    output_activation: "softmax" | "linear"; model: the `model=` config (hidden, activation,
    batchnorm, ...); reg: the job's `Regularization`. Loss, metrics, optimizer and weight decay are
    sweeps' (`compile_model`), as for the MLP.
    """

    input_shape: tuple
    image_shape: Optional[tuple]
    outputs: int
    task: str
    output_activation: str
    model: DictConfig
    reg: Regularization

    @classmethod
    def of(cls, cfg: DictConfig, data) -> "ModelSpec":
        classes = data.n_classes
        return cls((data.input_dim,), data.image_shape, classes or 1, data.task,
                   "linear" if classes is None else "softmax", cfg.model, Regularization(cfg))

    def check(self, where: str, model: keras.Model) -> None:
        """The model takes the data's examples and gives the task's outputs, and applies the regularizers."""
        got_in, got_out = tuple(model.input_shape[1:]), model.output_shape[-1]
        if got_in != self.input_shape:
            raise ConfigError(f"{where} built a model for inputs shaped {got_in}; the data's examples are "
                              f"{self.input_shape} (use keras.Input(spec.input_shape))")
        if got_out != self.outputs:
            raise ConfigError(f"{where} built a model with {got_out} outputs; the data needs {self.outputs} "
                              "(end with Dense(spec.outputs, activation=spec.output_activation))")
        self.reg.check(where)


def build_cnn(spec: ModelSpec, kernel_size: int = 3) -> keras.Model:
    """`model=cnn`: a small convolutional net on image data, built through the same seam as your model.

    Per width of `model.hidden`: Conv2D (same padding, `model.activation`, the job's penalty and
    constraint), batch norm if `model.batchnorm`, 2x2 max pooling while the image is at least 2x2, the
    job's dropout; then global average pooling and the output layer.
    """
    if spec.image_shape is None:
        raise ConfigError("model=cnn needs image data (data=digits, mnist, fashion_mnist, or an npz of images "
                          "shaped (N, H, W[, C])); this data has flat features: use model=mlp")
    inputs = keras.Input(spec.input_shape, name="input")
    x = spec.reg.input_noise()(inputs)
    x = keras.layers.Reshape(spec.image_shape, name="image")(x)
    size = min(spec.image_shape[:2])
    for i, filters in enumerate(spec.model.hidden):
        x = keras.layers.Conv2D(filters, kernel_size, padding="same", activation=spec.model.activation,
                                name=f"hidden_{i}", **spec.reg.conv_kwargs(i))(x)
        if spec.model.batchnorm:
            x = keras.layers.BatchNormalization(name=f"bn_{i}")(x)
        if size >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
            size //= 2
        x = spec.reg.dropout(i)(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(spec.outputs, activation=spec.output_activation, name="output")(x)
    return keras.Model(inputs, outputs, name=spec.model.name)


def build_model(cfg: DictConfig, input_dim: int, n_classes: int | None) -> keras.Model:
    """Sequential MLP; the output follows the task: softmax over classes, or one linear unit."""
    layers: list[keras.layers.Layer] = [keras.Input(shape=(input_dim,), name="input")]
    if cfg.input_noise > 0:  # active in training only, as dropout
        layers.append(keras.layers.GaussianNoise(cfg.input_noise, name="input_noise"))
    reg = Regularization(cfg)  # penalty and constraint per layer, as a builder of `model._target_` gets them
    for i, width in enumerate(cfg.model.hidden):
        layers.append(keras.layers.Dense(width, activation=cfg.model.activation, name=f"hidden_{i}",
                                         **reg.dense_kwargs(i)))
        if cfg.model.batchnorm:
            layers.append(keras.layers.BatchNormalization(name=f"bn_{i}"))
        if cfg.dropout > 0 and regularizers.selected(cfg.dropout_layers, i):
            layers.append(regularizers.dropout(cfg.dropout_type, cfg.dropout, name=f"dropout_{i}"))
    if n_classes is None:
        layers.append(keras.layers.Dense(1, name="output"))
    else:
        layers.append(keras.layers.Dense(n_classes, activation="softmax", name="output"))
    return keras.Sequential(layers, name=cfg.model.name)


def make_optimizer(cfg: DictConfig, decay: bool = True) -> keras.optimizers.Optimizer:
    """The optimizer, with `optimizer.weight_decay` as Keras' decoupled decay on the kernels only
    (`decay=False`: none, for a packed model that decays each member with its own factor)."""
    opt = cfg.optimizer
    wd = opt.weight_decay if decay else 0.0
    kwargs = {"weight_decay": wd} if wd > 0 else {}
    if opt.name == OptimizerName.adam:
        optimizer = keras.optimizers.Adam(learning_rate=opt.lr, **kwargs)
    elif opt.name == OptimizerName.adamw:
        optimizer = keras.optimizers.AdamW(learning_rate=opt.lr, weight_decay=wd)  # AdamW's default is not 0
    elif opt.name == OptimizerName.nadam:
        optimizer = keras.optimizers.Nadam(learning_rate=opt.lr, **kwargs)
    elif opt.name == OptimizerName.sgd:
        optimizer = keras.optimizers.SGD(learning_rate=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov, **kwargs)
    else:
        optimizer = keras.optimizers.RMSprop(learning_rate=opt.lr, **kwargs)
    if wd > 0:  # as `reg.target=kernel` and the weight statistics: biases and batch norm's scale and shift stay
        optimizer.exclude_from_weight_decay(var_names=regularizers.NOT_DECAYED)
    return optimizer


# Batches per call into TensorFlow when `steps_per_execution` is null: on small MLPs Keras' per-step
# Python overhead dominates, and 64 steps per call measured 2.6x faster than 1 on a 64-32 epoch here.
# The weight updates are the same, in the same order; epoch-end hooks see the same epoch.
AUTO_STEPS_PER_EXECUTION = 64


def compile_model(model: keras.Model, cfg: DictConfig, task: str) -> keras.Model:
    """Sparse categorical cross-entropy + accuracy, or MSE + MAE for regression.

    Keras' `loss` adds the regularization penalty to the data term; the `data_loss` metric is the
    data term alone (the same function of the same outputs, so `loss - data_loss` is the penalty).
    """
    if task == "regression":
        loss, metrics = "mse", ["mae", keras.metrics.MeanSquaredError(name="data_loss")]
    elif cfg.label_smoothing > 0:  # the data term is the smoothed cross-entropy Keras minimises
        loss, data_loss = regularizers.smoothed_loss(cfg.label_smoothing)
        metrics = ["accuracy", data_loss]
    else:
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy",
                                                            keras.metrics.SparseCategoricalCrossentropy(name="data_loss")]
    model.compile(optimizer=make_optimizer(cfg), loss=loss, metrics=metrics,
                  steps_per_execution=cfg.steps_per_execution or AUTO_STEPS_PER_EXECUTION)
    return model


def portable(model: keras.Model) -> keras.Model:
    """The model as it is logged: one any Keras loads without sweeps, in safe mode, with nothing pickled.

    Label smoothing is a training device, and its loss is ours: the logged copy (same architecture and
    weights) is compiled with the plain cross-entropy and accuracy it is scored by.
    """
    if not isinstance(model.loss, regularizers.SmoothedSparseCrossentropy):
        return model
    copy = type(model).from_config(model.get_config())  # architecture only (clone_model copies the compile too)
    copy.set_weights(model.get_weights())
    copy.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return copy


def kernel_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers whose kernels the weight statistics follow: every layer with a kernel (Dense, Conv)
    but the last one, the output (which no penalty of `reg` reaches either)."""
    return [layer for layer in model.layers if getattr(layer, "kernel", None) is not None][:-1]


def summary_text(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)
