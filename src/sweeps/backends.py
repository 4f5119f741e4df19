"""Keras' backend for this process, from the job's `backend` key: Keras reads `KERAS_BACKEND`
once, at its first import, so a job (or a pack) sets it before anything imports Keras, in the
process that trains it, whatever launched that process. One process runs one backend: a job whose
backend differs from the one this process already imported is refused in one line
(`check_overrides` refuses a sweep over `backend` before anything runs, for the same reason).

Nothing on the JAX path imports TensorFlow: the batches are NumPy there (`fitting.EpochBatches`,
`fitting.ArrayBatches`), the model is logged and loaded in MLflow's Keras 3 flavor, and only
TensorFlow's own settings (`fitting.use_threads`) are skipped.
"""

from __future__ import annotations

import os
import sys

from sweeps.errors import ConfigError


def use(backend) -> None:
    """Make `backend` (`tensorflow` | `jax`, or the config's `Backend`) Keras' backend in this process,
    before Keras' first import."""
    backend = getattr(backend, "value", backend)
    keras = sys.modules.get("keras")
    if keras is None:
        if backend == "jax":
            try:
                import jax  # noqa: F401 - said here in one line, not as Keras' traceback at its import
            except ImportError:
                raise ConfigError('backend=jax needs JAX: pip install "jax[cpu]" (make install does)') from None
        os.environ["KERAS_BACKEND"] = backend  # read once, by Keras' first import, in this process only
        return
    running = keras.backend.backend()
    if running != backend:
        raise ConfigError(f"backend={backend}: this process already runs Keras on {running}; one process runs one "
                          f"backend (start another: python -m sweeps.train backend={backend} ...)")


def set_seed(seed: int) -> None:
    """What `keras.utils.set_random_seed` does, without importing TensorFlow on another backend:
    Keras seeds TensorFlow's generator too whenever TensorFlow is installed, which imports it (6-10 s
    here) on JAX, where nothing needs it. So there: Keras' global `SeedGenerator` dropped (its next
    one draws its seed from Python's generator), and Python's and NumPy's generators seeded."""
    import random

    import keras
    import numpy as np

    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    keras.utils.clear_session(free_memory=False)  # Keras' public reset of its global state, the generator with it
    random.seed(seed)
    np.random.seed(seed)
