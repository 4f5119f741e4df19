"""K configurations of one MLP trained as one Keras model: stacked kernels and batched matmuls.

Member k of a `PackedMLP` is the network `models.build_model` builds for the k-th job of a pack:
layer i holds one `[K, in, out]` kernel and one `[K, out]` bias, so a training step is one batched
matmul per layer for all K members, and the optimizer updates one variable per layer instead of K.
Members share the architecture, optimizer, learning rate and batch size; each has its own weights,
penalty (kind, target, layers, rate), dropout (rate, kind, layers), decoupled weight decay, max-norm
constraint, label smoothing, input noise and batches. The loss minimised
is the sum of the members' losses, and since no weight is shared, member k's gradient is exactly
the gradient of its own loss (data term + own penalty), as if it were trained alone.

`train_step`/`test_step` log one value per member (`loss`, `data_loss`, `accuracy`/`mae`: vectors
of length K); `packing` splits them into each member's own MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import keras
import numpy as np
from keras import ops

from sweeps.config import DropoutType, RegKind, RegTarget
from sweeps.training.regularizers import selected


@dataclass(frozen=True)
class Member:
    """What varies between the members of a pack (per hidden layer where it applies)."""

    l1: tuple[float, ...]  # L1 factor of the penalty on each hidden layer (0: none)
    l2: tuple[float, ...]  # L2 factor of the penalty on each hidden layer (0: none)
    target: RegTarget  # what the penalty applies to
    dropout: tuple[float, ...]  # dropout rate after each hidden layer (0: none)
    gaussian: bool  # GaussianDropout instead of Dropout
    weight_decay: float = 0.0  # decoupled: each step every kernel w -= lr * weight_decay * w
    max_norm: float = 0.0  # each hidden unit's incoming weights kept within this norm (0: none)
    label_smoothing: float = 0.0  # classification targets (1 - s) one-hot + s / classes
    input_noise: float = 0.0  # std of the Gaussian noise on the inputs while training

    @classmethod
    def of(cls, cfg) -> "Member":
        n = len(cfg.model.hidden)
        kind, rate = cfg.reg.kind, float(cfg.rate)
        on = [selected(cfg.reg.layers, i) for i in range(n)]
        l1 = tuple(rate if on[i] and kind in (RegKind.l1, RegKind.l1_l2) else 0.0 for i in range(n))
        l2 = tuple(rate if on[i] and kind in (RegKind.l2, RegKind.l1_l2) else 0.0 for i in range(n))
        drop = tuple(float(cfg.dropout) if selected(cfg.dropout_layers, i) else 0.0 for i in range(n))
        return cls(l1, l2, cfg.reg.target, drop, cfg.dropout_type == DropoutType.gaussian,
                   float(cfg.optimizer.weight_decay), float(cfg.max_norm or 0.0), float(cfg.label_smoothing),
                   float(cfg.input_noise))


class VectorMean(keras.metrics.Metric):
    """Mean over an epoch of one value per member, weighted by batch size (as Keras weighs its own)."""

    def __init__(self, name: str, size: int):
        super().__init__(name=name)
        self.total = self.add_variable(shape=(size,), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, values, weight):
        weight = ops.cast(weight, "float32")
        self.total.assign_add(ops.cast(values, "float32") * weight)
        self.count.assign_add(weight)

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.total.assign(ops.zeros(self.total.shape))  # a shape, not the variable: JAX's zeros_like takes no Keras variable
        self.count.assign(0.0)


def _abs_derivative(w):
    """d|w|/dw as this backend differentiates Keras' L1 penalty, so that a member steps as it would
    alone: sign(w) on TensorFlow (0 at w = 0), 1 at w = 0 on JAX (a bias starts at 0)."""
    if keras.backend.backend() == "jax":
        return ops.where(w < 0, -1.0, 1.0)
    return ops.sign(w)


def _column(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype="float32")


class PackedMLP(keras.Model):
    """`members` MLPs of widths `hidden` as stacked layers.

    Inputs: `[B, in]` (every member sees the same batch: validation, test, members sharing a seed)
    or `[K, B, in]` (member k sees its own batch). Output (`call`): `[K, B, classes]` softmax, or
    `[K, B]` for regression (`n_classes` None). Its kernels start at zero: `load_members` gives every
    member its initial weights (those of the member's own model).
    """

    def __init__(self, members: Sequence[Member], input_dim: int, hidden: Sequence[int], activation: str,
                 n_classes: Optional[int], seed: int = 0):
        super().__init__(name="packed_mlp")
        self.members = list(members)
        self.k = len(self.members)
        self.widths = [input_dim, *hidden, n_classes or 1]
        self.activation = keras.activations.get(activation)
        self.classify = n_classes is not None
        self.kernels, self.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            name = f"hidden_{i}" if i < len(hidden) else "output"
            # zeros: every member's initial weights come from its own model (`load_members`); drawn here they
            # would be thrown away, and on JAX each new shape compiles its random draw again (0.5-1 s each)
            self.kernels.append(self.add_weight(shape=(self.k, fan_in, fan_out), initializer="zeros",
                                                name=f"{name}_kernel"))
            self.biases.append(self.add_weight(shape=(self.k, fan_out), initializer="zeros", name=f"{name}_bias"))
        n = len(hidden)
        self.l1 = [_column([m.l1[i] for m in self.members]) for i in range(n)]
        self.l2 = [_column([m.l2[i] for m in self.members]) for i in range(n)]
        self.drop = [_column([m.dropout[i] for m in self.members]) for i in range(n)]
        self.gaussian = _column([m.gaussian for m in self.members])
        self.decay = _column([m.weight_decay for m in self.members])
        self.max_norm = _column([m.max_norm for m in self.members])
        self.smoothing = _column([m.label_smoothing for m in self.members])
        self.noise = _column([m.input_noise for m in self.members])
        self.target = [m.target for m in self.members]
        self.penalized = self._penalized()
        self.seed_generator = keras.random.SeedGenerator(seed)
        names = ("loss", "data_loss", "accuracy" if self.classify else "mae")
        self.trackers = [VectorMean(name, self.k) for name in names]

    @property
    def metrics(self):
        return self.trackers

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x, training: bool = False):
        """Outputs `[K, B, C]` (logits of a classifier: the loss takes them, as it is cheaper and
        Keras' cross-entropy of the softmax agrees to float precision) and each member's activity
        penalty `[K]` for this batch."""
        activity = ops.zeros((self.k,))
        h = x
        last = len(self.kernels) - 1
        for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            if len(h.shape) == 2:  # one batch for every member: one [B, in] x [in, K*out] matmul
                fan_in, fan_out = kernel.shape[1], kernel.shape[2]
                wide = ops.reshape(ops.transpose(kernel, (1, 0, 2)), (fan_in, self.k * fan_out))
                z = ops.transpose(ops.reshape(ops.matmul(h, wide), (-1, self.k, fan_out)), (1, 0, 2))
            else:
                z = ops.matmul(h, kernel)
            z = z + bias[:, None, :]
            if i == last:
                return (z if self.classify else z[..., 0]), activity
            h = self.activation(z)
            activity = activity + self._activity_penalty(i, h)
            if training and self.drop[i].any():
                h = self._dropout(i, h)
        raise AssertionError("unreachable")

    def call(self, x, training=False):
        out = self.forward(x, training)[0]
        return ops.softmax(out) if self.classify else out

    def _activity_penalty(self, i: int, h):
        """Keras' activity_regularizer: penalty of the layer's output, divided by the batch size."""
        on = np.array([t == RegTarget.activity for t in self.target], dtype="float32")
        l1, l2 = self.l1[i] * on, self.l2[i] * on
        if not (l1.any() or l2.any()):
            return ops.zeros((self.k,))
        batch = ops.cast(ops.shape(h)[1], "float32")
        return (l1 * ops.sum(ops.abs(h), axis=(1, 2)) + l2 * ops.sum(ops.square(h), axis=(1, 2))) / batch

    def _dropout(self, i: int, h):
        """Each member's own dropout: Dropout (zero with probability p, scale by 1/(1-p)) or
        GaussianDropout (multiply by N(1, p/(1-p))); p = 0 leaves a member's units alone."""
        p = self.drop[i][:, None, None]
        keep = 1.0 - p
        uniform = keras.random.uniform(ops.shape(h), seed=self.seed_generator)
        standard = ops.where(uniform < keep, 1.0 / keep, 0.0)
        if not self.gaussian.any():
            return h * standard
        noise = keras.random.normal(ops.shape(h), seed=self.seed_generator)
        gaussian = 1.0 + np.sqrt(p / keep) * noise
        return h * ops.where(self.gaussian[:, None, None] > 0, gaussian, standard)

    def _noisy(self, x):
        """Each member's own input noise (Keras' GaussianNoise: x + N(0, std)); std 0 leaves x alone."""
        if len(x.shape) == 2:  # one batch for every member: each gets its own noisy copy
            x = ops.broadcast_to(x[None], (self.k, *ops.shape(x)))
        return x + keras.random.normal(ops.shape(x), seed=self.seed_generator) * self.noise[:, None, None]

    def _decay_weights(self) -> None:
        """Decoupled weight decay before the update, as Keras' optimizers apply it: every kernel (not
        the biases: `regularizers.NOT_DECAYED`) w -= w * weight_decay * lr, with each member's factor."""
        lr = ops.cast(self.optimizer.learning_rate, "float32")
        for kernel in self.kernels:
            kernel.assign(kernel - kernel * (self.decay[:, None, None] * lr))

    def _constrain(self) -> None:
        """Max-norm after the update, as Keras' `MaxNorm(axis=0)` on each hidden kernel: a member's unit
        whose incoming weights are longer than its bound is scaled back to it; other members untouched."""
        bound = self.max_norm[:, None, None]
        for kernel in self.kernels[:-1]:
            norms = ops.sqrt(ops.sum(ops.square(kernel), axis=1, keepdims=True))
            scale = ops.minimum(norms, bound) / (keras.config.epsilon() + norms)
            kernel.assign(kernel * ops.where(bound > 0, scale, 1.0))

    def _penalized(self) -> list:
        """(variable, L1 factors, L2 factors) of every weight some member penalizes, the factors
        shaped to broadcast over the variable (0 for members that leave it alone)."""
        out = []
        for i in range(len(self.l1)):
            for target, weight in ((RegTarget.kernel, self.kernels[i]), (RegTarget.bias, self.biases[i])):
                on = np.array([t == target for t in self.target], dtype="float32")
                l1, l2 = self.l1[i] * on, self.l2[i] * on
                if l1.any() or l2.any():
                    shape = (self.k,) + (1,) * (len(weight.shape) - 1)
                    out.append((weight, np.reshape(l1, shape), np.reshape(l2, shape)))
        return out

    def weight_penalty(self):
        """Each member's kernel and bias penalties `[K]` (Keras' L1/L2: factor times sum |w| or w²),
        one pass over each penalized weight: a pack's weights do not fit in cache, so each pass is
        paid in memory traffic (with L1 and L2 members the separate passes and the differentiated
        ones took ~30 % of a 128x4 Adam step)."""
        total = ops.zeros((self.k,))
        for weight, l1, l2 in self.penalized:
            terms = (ops.abs(weight) * l1 if l1.any() else 0.0) + (ops.square(weight) * l2 if l2.any() else 0.0)
            total = total + ops.sum(ops.reshape(terms, (self.k, -1)), axis=1)
        return total

    def with_penalty_gradients(self, grads: list) -> list:
        """`grads` of the trainable variables plus the weight penalties' gradients, written out
        (l1 d|w|/dw + 2 l2 w, what differentiating `weight_penalty` on this backend gives) so that XLA fuses them
        into the optimizer's update instead of making extra passes over the weights."""
        factors = {id(weight): (l1, l2) for weight, l1, l2 in self.penalized}
        out = []
        for variable, grad in zip(self.trainable_variables, grads):
            if id(variable) in factors:
                l1, l2 = factors[id(variable)]
                if l1.any():
                    grad = grad + _abs_derivative(variable) * l1
                if l2.any():
                    grad = grad + ops.multiply(variable, 2.0 * l2)
            out.append(grad)
        return out

    # -- losses and steps ------------------------------------------------------------------------
    def _per_member(self, y, out):
        """Data loss and the second metric per member, averaged over the batch: `[K]` each."""
        if len(y.shape) == 1:
            y = ops.broadcast_to(y[None], (self.k, ops.shape(y)[0]))
        if self.classify:
            y = ops.cast(y, "int32")
            if self.smoothing.any():  # as `regularizers.smoothed_sparse_crossentropy`, with each member's s
                s, classes = self.smoothing[:, None, None], out.shape[-1]
                target = ops.one_hot(y, classes) * (1.0 - s) + s / classes
                loss = keras.losses.categorical_crossentropy(target, out, from_logits=True)
            else:
                loss = keras.losses.sparse_categorical_crossentropy(y, out, from_logits=True)
            hit = ops.cast(ops.equal(ops.cast(ops.argmax(out, axis=-1), "int32"), y), "float32")
            return ops.mean(loss, axis=1), ops.mean(hit, axis=1)
        y = ops.cast(y, "float32")
        return ops.mean(ops.square(y - out), axis=1), ops.mean(ops.abs(y - out), axis=1)

    def _update(self, x, data_loss, second, penalty):
        batch = ops.shape(x)[-2]
        for tracker, values in zip(self.trackers, (data_loss + penalty, data_loss, second)):
            tracker.update_state(values, batch)
        return {t.name: t.result() for t in self.trackers}

    def _member_losses(self, x, y, training: bool):
        """Each member's data loss, second metric and activity penalty `[K]` on one batch."""
        inputs = self._noisy(x) if training and self.noise.any() else x
        out, activity = self.forward(inputs, training=training)
        data_loss, second = self._per_member(y, out)
        return data_loss, second, activity

    def _learn(self, x, grads: list, data_loss, second, activity):
        """The update from the data and activity losses' `grads`: the weight penalties' gradients
        added, each member's decay, the optimizer, max-norm; the step's logs."""
        grads = self.with_penalty_gradients(grads)
        penalty = self.weight_penalty() + activity  # of the weights this step's gradients were taken at
        if self.decay.any():  # the packed model's optimizer has none of its own (`packing`): members differ
            self._decay_weights()
        self.optimizer.apply(grads, self.trainable_variables)
        if self.max_norm.any():
            self._constrain()
        return self._update(x, data_loss, second, penalty)

    def train_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_step(*args, training=True)
        import tensorflow as tf

        (data,) = args
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            data_loss, second, activity = self._member_losses(x, y, training=True)
            total = ops.sum(data_loss + activity)
        return self._learn(x, tape.gradient(total, self.trainable_variables), data_loss, second, activity)

    def _jax_step(self, state, data, training: bool):
        """A training or test step on JAX, whose trainer hands the variables' values in and takes
        them back (`state`): the same stateful code as on TensorFlow, run in Keras' public
        `StatelessScope` (reads see the values handed in, assignments are collected), as Keras'
        own `stateless_call` and `stateless_apply` do; the gradient by `jax.value_and_grad`."""
        import jax

        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        kinds = ("trainable", "non_trainable", "optimizer", "metrics") if training else ("trainable", "non_trainable", "metrics")
        refs = {"trainable": self.trainable_variables, "non_trainable": self.non_trainable_variables,
                "optimizer": self.optimizer.variables if training else [], "metrics": self.metrics_variables}
        values = dict(zip(kinds, state))

        def scoped(values: dict, step):
            mapping = [(ref, value) for kind in values for ref, value in zip(refs[kind], values[kind])]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                result = step()
            return result, {kind: [scope.get_current_value(ref) for ref in refs[kind]] for kind in values}

        if not training:
            logs, values = scoped(values, lambda: self.test_step(data))
            return logs, tuple(values[kind] for kind in kinds)

        def total(trainable):
            (data_loss, second, activity), after = scoped({**values, "trainable": trainable},
                                                          lambda: self._member_losses(x, y, training=True))
            return ops.sum(data_loss + activity), (data_loss, second, activity, after["non_trainable"])

        (_, (data_loss, second, activity, values["non_trainable"])), grads = jax.value_and_grad(total, has_aux=True)(
            values["trainable"])  # non_trainable: the dropout and noise seed's next state
        logs, values = scoped(values, lambda: self._learn(x, grads, data_loss, second, activity))
        return logs, tuple(values[kind] for kind in kinds)

    def make_test_function(self, force=False):
        """Validation and evaluation run without XLA even when training steps use it: each new batch
        shape (every set's smaller last batch, the test and training sets) would be compiled again,
        about 0.5 s each, for a test step that measured no faster (`PackedLauncherConf.jit_compile`).
        Keras reads the public `jit_compile` while it builds the function: the toggle below is fenced
        by tests/test_packing.py::test_the_test_step_runs_without_xla_while_the_training_steps_use_it."""
        if keras.backend.backend() != "tensorflow":  # uncompiled, a JAX step runs op by op: far slower than compiling each shape
            return super().make_test_function(force)
        jit = self.jit_compile
        self.jit_compile = False
        try:
            return super().make_test_function(force)
        finally:
            self.jit_compile = jit

    def test_step(self, *args):
        # the argument count decides, not the backend: on JAX the trainer calls test_step(state, data),
        # and `_jax_step` then runs the stateful step below as test_step(data) inside its scope
        if len(args) == 2:
            return self._jax_step(*args, training=False)
        x, y, _ = keras.utils.unpack_x_y_sample_weight(args[0])
        data_loss, second, activity = self._member_losses(x, y, training=False)
        return self._update(x, data_loss, second, self.weight_penalty() + activity)

    # -- members as ordinary models ------------------------------------------------------------------
    def load_members(self, weights: Sequence[Sequence[np.ndarray]]) -> None:
        """Every member's weights at once, member k's from `weights[k]` (an unpacked model's `get_weights()`)."""
        stacked = zip(*weights)  # per variable: the members' values
        for variable, values in zip(self._member_variables(), stacked):
            variable.assign(np.stack(values))

    def member_weights(self, k: int) -> list[np.ndarray]:
        """Member k's weights in an unpacked model's `get_weights()` order (kernel, bias, per layer)."""
        return [keras.ops.convert_to_numpy(variable[k]) for variable in self._member_variables()]

    def _member_variables(self) -> list:
        return [v for pair in zip(self.kernels, self.biases) for v in pair]
