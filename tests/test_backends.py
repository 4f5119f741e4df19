"""`backend=jax` against `backend=tensorflow` for real (slow): the same digits sweep on each, the
packed model's arithmetic checked again on JAX, and a sweep over backends refused. JAX runs in
fresh processes: this test process imported Keras on TensorFlow, and one process runs one backend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from test_cli import assert_quiet
from test_faults_cli import _env, run_cli

pytestmark = pytest.mark.slow

JOBS = ["-m", "data=digits", "model.hidden=[32,16]", "optimizer=sgd", "optimizer.lr=0.05", "epochs=4",
        "reg=l1,l2", "rate=1e-4,1e-3"]


def test_the_same_digits_sweep_on_each_backend_is_the_same_science_and_kept_apart(tmp_path):
    """Packed on JAX, unpacked on TensorFlow, into one experiment: every run FINISHED with its backend
    logged; the TensorFlow sweep trains every job again (the backend is in the config hash: a resume
    never mixes them); each job's curve agrees within seed-to-seed noise (the backends draw other
    initial weights from the same seed); a model trained on JAX reloads here (TensorFlow) and scores
    what its run logged. The JAX sweep prints none of TensorFlow's start-up noise."""
    jax = run_cli(tmp_path, *JOBS, "backend=jax", "hydra/launcher=packed", timeout=600)
    assert jax.returncode == 0, jax.stderr[-3000:]
    assert_quiet(jax)  # saving the models imports TensorFlow on JAX (Keras' serializer): without its banner
    tf = run_cli(tmp_path, *JOBS, "backend=tensorflow", timeout=600)
    assert tf.returncode == 0, tf.stderr[-3000:]
    assert "not retrained" not in tf.stderr, "a JAX run is no finished TensorFlow job"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id], "tags.`sweeps.kind` = 'job'")
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    by = {(r.data.params["backend"], r.info.run_name): r for r in runs}
    assert sorted({b for b, _ in by}) == ["jax", "tensorflow"]
    assert all(r.data.tags["sweeps.keras_backend"] == r.data.params["backend"] for r in runs), "as Keras itself said"
    names = sorted({n for _, n in by})
    assert len(names) == 4
    assert len({r.data.tags["sweeps.config_hash"] for r in runs}) == 8
    assert all("sweeps.packed_with" in by["jax", n].data.tags for n in names), "the JAX jobs trained as one pack"
    for name in names:
        curves = {b: [m.value for m in client.get_metric_history(by[b, name].info.run_id, "val_data_loss")]
                  for b in ("jax", "tensorflow")}
        assert len(curves["jax"]) == len(curves["tensorflow"]) == 4
        assert curves["jax"][-1] < curves["jax"][0] and curves["tensorflow"][-1] < curves["tensorflow"][0], name
        np.testing.assert_allclose(curves["jax"][-1], curves["tensorflow"][-1], rtol=0.3, err_msg=name)
        accuracy = {b: by[b, name].data.metrics["test_accuracy"] for b in ("jax", "tensorflow")}
        assert abs(accuracy["jax"] - accuracy["tensorflow"]) <= 0.04, (name, accuracy)

    import mlflow

    from sweeps.tracking import load_keras_model
    from sweeps.training.data import load_dataset
    from test_packing import cfg_of

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    run = by["jax", names[0]]
    model = load_keras_model(f"runs:/{run.info.run_id}/model")
    data = load_dataset(cfg_of().data)
    scored = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
    np.testing.assert_allclose(scored["accuracy"], run.data.metrics["test_accuracy"], rtol=1e-6)


def test_the_packed_models_arithmetic_and_the_pipeline_agree_with_keras_on_jax_too():
    """tests/test_packing.py's step-by-step checks (our batch order, each member's penalty, step,
    decay, max-norm, smoothing, noise, dropout, early stopping against Keras' own models) and
    tests/test_models.py's (models, evaluation batches, weight statistics), on JAX, to the same
    tolerances: one pytest process with Keras on JAX."""
    here = Path(__file__).parent
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider",
                           str(here / "test_packing.py"), str(here / "test_models.py")], cwd=here.parent,
                          capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "jax"}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 40, proc.stdout[-1000:]


WATCHED = """import atexit, runpy, sys, traceback
first = []
class Watch:  # where TensorFlow is first imported, if anywhere
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" and not first:
            first.append("".join(traceback.format_stack(limit=10)))
sys.meta_path.insert(0, Watch())
atexit.register(lambda: print("tensorflow imported:", first[0] if first else "never", file=sys.stderr))
runpy.run_module("sweeps.train", run_name="__main__", alter_sys=True)
"""


def test_a_job_on_jax_never_imports_tensorflow(tmp_path):
    """Seeding, our batches, evaluation, the NaN stop, weight statistics and the store: none of them
    imports TensorFlow on JAX. (Saving the model does: Keras' serializer looks for TensorFlow types
    whenever TensorFlow is installed; `tracking.log_model=false` leaves it out.)"""
    proc = subprocess.run([sys.executable, "-c", WATCHED, "backend=jax", "data=digits", "epochs=2",
                           "tracking.log_model=false"], cwd=tmp_path, capture_output=True, text=True,
                          env=_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tensorflow imported: never" in proc.stderr, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["backend"] == "jax"
    assert run.data.metrics["test_accuracy"] > 0.8


def test_a_sweep_over_backends_is_one_line_exit_2_and_nothing_written(tmp_path):
    proc = run_cli(tmp_path, *JOBS[:2], "backend=tensorflow,jax")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: backend=tensorflow,jax: one backend per sweep; run a sweep per backend (backend=jax, then "
        "backend=tensorflow) and compare them with python -m sweeps.compare"]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "multirun").exists()


COMPILES = """from sweeps import backends
backends.use("jax")
import keras
keras.layers.Dense(64).build((None, 784))  # its kernel's random draw: a program JAX compiles (0.5-1 s here)
"""
HIT = "Persistent compilation cache hit for 'jit__uniform'"


def test_jax_programs_compiled_once_are_read_back_by_later_processes(tmp_path):
    """JAX's persistent compilation cache (`backends.compilation_cache`): the first process compiles
    and writes under ~/.cache/sweeps/jax ($XDG_CACHE_HOME), the next reads it back instead of
    compiling; a cache the user names in JAX's own variable wins over ours."""
    def run(**extra):
        proc = subprocess.run([sys.executable, "-c", COMPILES], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "JAX_LOG_COMPILES": "1",
                                   **extra})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stderr

    ours = tmp_path / "xdg" / "sweeps" / "jax"
    assert HIT not in run()
    kept = sorted(p.name for p in ours.glob("jit__uniform-*"))
    assert kept, "the first process kept its compiled draw"
    assert HIT in run(), "the second read it back"
    theirs = tmp_path / "theirs"
    assert HIT not in run(JAX_COMPILATION_CACHE_DIR=str(theirs))
    assert list(theirs.glob("jit__uniform-*")) and sorted(p.name for p in ours.glob("jit__uniform-*")) == kept
