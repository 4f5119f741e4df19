"""Keras' backend for this process, from the job's `backend` key: Keras reads `KERAS_BACKEND`
once, at its first import, so a job (or a pack) sets it before anything imports Keras, in the
process that trains it, whatever launched that process. One process runs one backend: a job whose
backend differs from the one this process already imported is refused in one line
(`check_overrides` refuses a sweep over `backend` before anything runs, for the same reason).

Nothing on the JAX path imports TensorFlow: the batches are NumPy there (`fitting.EpochBatches`,
`fitting.ArrayBatches`), the model is logged and loaded in MLflow's Keras 3 flavor, and only
TensorFlow's own settings (`fitting.use_threads`) are skipped. Saving a model is the one step where
Keras itself imports TensorFlow when it is installed (`import_tensorflow`). Keras is imported here
(`import_keras`) without TensorFlow's C++ start-up banner, and JAX compiles through its persistent
cache (`compilation_cache`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from typing import Iterator

from sweeps.errors import ConfigError

VERBOSE = "SWEEPS_VERBOSE"  # "1": the start-up noise below is shown (`-v`); workers inherit it


def verbose() -> bool:
    """Whether this process (and the workers it starts) shows TensorFlow's and MLflow's start-up noise."""
    return os.environ.get(VERBOSE) == "1"


def quiet():
    """`held_stderr` unless verbose."""
    return contextlib.nullcontext() if verbose() else held_stderr()


@contextlib.contextmanager
def held_stderr() -> Iterator[None]:
    """File descriptor 2 (C++ libraries write there) into a temporary file inside; shown if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_keras(backend=None) -> None:
    """Import Keras on `backend` (`tensorflow` | `jax`, `backends.use`; None: as the environment
    says), without TensorFlow's C++ start-up banner (written before any log level applies) unless
    verbose. On TensorFlow that imports TensorFlow; on JAX, nothing of it."""
    if backend is not None:
        use(backend)
    with quiet():
        import keras  # noqa: F401


def import_tensorflow() -> None:
    """On another backend, TensorFlow imported (quietly, as `import_keras` does) where a step of Keras'
    imports it anyway whenever it is installed: saving a model (Keras' serializer checks TensorFlow's
    types). Its C++ banner would otherwise reach the terminal in the middle of a JAX sweep."""
    if "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow") is not None:
        with quiet():
            import tensorflow  # noqa: F401


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
            compilation_cache()
        os.environ["KERAS_BACKEND"] = backend  # read once, by Keras' first import, in this process only
        return
    running = keras.backend.backend()
    if running != backend:
        raise ConfigError(f"backend={backend}: this process already runs Keras on {running}; one process runs one "
                          f"backend (start another: python -m sweeps.train backend={backend} ...)")


# JAX's own variables, read by `compilation_cache`: a user's setting wins over ours
CACHE_ENV = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
             "JAX_COMPILATION_CACHE_MAX_SIZE")
CACHE_MIN_COMPILE_S = 0.1  # JAX's default (1 s) keeps none of ours: a step compiles in 0.2-1 s, a random draw in 0.5-1
CACHE_MAX_BYTES = 1 << 30  # a sweep's programs take well under 1 MB; bounded, JAX also locks the folder (filelock)


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sweeps", "jax")


def compilation_cache() -> None:
    """JAX's persistent compilation cache, in `cache_dir()` unless the environment names another:
    a program compiled once (a shape's random draw, a step, an evaluation) is read back by every
    later process on this machine instead of being compiled again (docs/backends.md, "Compiling").
    JAX's own `JAX_ENABLE_COMPILATION_CACHE=false` turns it off; its `JAX_*` variables above win."""
    import jax

    ours = {"jax_compilation_cache_dir": cache_dir(), "jax_persistent_cache_min_compile_time_secs": CACHE_MIN_COMPILE_S,
            "jax_compilation_cache_max_size": CACHE_MAX_BYTES}
    for variable, (option, value) in zip(CACHE_ENV, ours.items()):
        if variable not in os.environ:
            jax.config.update(option, value)


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
