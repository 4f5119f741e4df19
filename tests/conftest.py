"""Shared fixtures: configs composed like the command line does, a throwaway MLflow store, small data."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from sweeps.config import conf_dir, register_configs


@pytest.fixture(scope="session", autouse=True)
def _schema():
    register_configs()


_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")  # as the user's shell gave it, before anything imported JAX


@pytest.fixture(autouse=True)
def _shell_log_level():
    """The commands a test starts see the shell's environment: JAX's import (TensorFlow's imports JAX when
    it is installed) sets TF_CPP_MIN_LOG_LEVEL=1 in this process, and `sweeps.train` keeps a level the
    user set (its own default is 3), so a command started after an in-process test would print
    TensorFlow's log lines that a user's command does not."""
    yield
    if _LOG_LEVEL is None:
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = _LOG_LEVEL


@pytest.fixture
def store(tmp_path) -> str:
    """A fresh SQLite tracking URI in the test's own folder."""
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture
def make_cfg(store):
    """compose(overrides) with the store above and small, fast defaults for digits."""

    def _make(*overrides: str, fast: bool = True):
        base = [f"tracking.uri={store}"]
        if fast:
            base += ["data=digits", "epochs=2", "model.hidden=[32,16]", "batch_size=64"]
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            return compose("config", overrides=[*base, *overrides])

    return _make


@pytest.fixture
def client(store) -> MlflowClient:
    return MlflowClient(store)


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An unsigned-byte IDX file (gzipped when the name ends in .gz), as LeCun's format defines it."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(blob)
    return path


def write_idx_dataset(folder: Path, n_train: int = 120, n_test: int = 40) -> Path:
    """The four MNIST-layout IDX files with random 28x28 images and labels cycling 0..9."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def write_kaggle_csv(path: Path, n: int, drop=None) -> Path:
    """Kaggle's Fashion-MNIST CSV layout (label,pixel1..pixel784), optionally without some columns."""
    cols = ["label"] + [f"pixel{i}" for i in range(1, 785)]
    rows = np.column_stack([np.arange(n) % 10, np.random.default_rng(n).integers(0, 256, (n, 784))])
    keep = [i for i, c in enumerate(cols) if c not in (drop or ())]
    lines = [",".join(cols[i] for i in keep)] + [",".join(str(r[i]) for i in keep) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_cal_housing(folder: Path, n: int = 50) -> np.ndarray:
    """A small `cal_housing.tgz` in StatLib's layout; returns the rows written."""
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.uniform(-124, -114, n), rng.uniform(32, 42, n), rng.integers(1, 52, n),
                            rng.integers(100, 5000, n), rng.integers(20, 900, n), rng.integers(100, 3000, n),
                            rng.integers(20, 800, n), rng.uniform(0.5, 15, n), rng.uniform(1e4, 5e5, n)])
    text = "\n".join(",".join(f"{v:.4f}" for v in r) for r in rows).encode()
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "cal_housing.tgz", "w:gz") as tar:
        info = tarfile.TarInfo("CaliforniaHousing/cal_housing.data")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    return np.round(rows, 4)


@pytest.fixture
def idx_folder(tmp_path) -> Path:
    """Four small Fashion-MNIST-shaped IDX files: 120 train and 40 test images, 10 classes."""
    return write_idx_dataset(tmp_path / "idx")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No system data, empty caches and mirrors that cannot answer: as on a machine without internet."""
    from sweeps.training import data

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("SWEEPS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SWEEPS_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})
    dead = (tmp_path / "no-such-mirror").as_uri() + "/"
    monkeypatch.setattr(data, "MIRRORS", {"fashion_mnist": [dead], "mnist": [dead]})
    monkeypatch.setitem(data.CALIFORNIA, "url", dead + "cal_housing.tgz")
    data.release()
    yield tmp_path
    data.release()


class InProcessSweep:
    """A sweep opened the way the sweeper opens one; `job()` is what the launcher hands each job.

    Jobs then run in this process with `train(cfg, sweep.job(overrides))`; `end()` reads them back
    from the store and ends the parent, as the sweeper does when the launcher returns.
    """

    def __init__(self, uri: str, sweep_dir: Path, swept: list[str], experiment: str = "sweeps", command: str = ""):
        from omegaconf import OmegaConf

        import uuid

        from sweeps import tracking
        from sweeps.sweeping import parent as sweep

        self.tracker = tracking.connect(OmegaConf.create({"uri": uri, "experiment": experiment, "artifact_root": None}))
        self.sweep_dir = str(sweep_dir)
        self.key = uuid.uuid4().hex  # as `context.assign_key` gives every sweep
        self.parent_run_id = sweep.open_parent(self.tracker, command or " ".join(swept), self.sweep_dir,
                                               [s.split("=")[0] for s in swept], 0, key=self.key)
        self.launched = 0
        self.outcome = None

    def job(self, overrides: list[str]):
        from sweeps.training.context import JobContext

        self.launched += 1
        return JobContext(tuple(overrides), self.sweep_dir, sweep_key=self.key)

    def end(self):
        from sweeps.sweeping import parent as sweep

        if self.outcome is None:
            self.outcome = sweep.finish(self.tracker, self.parent_run_id, self.launched)
        return self.outcome


@pytest.fixture
def a_sweep(tmp_path, store):
    """Open in-process sweeps (`a_sweep(["rate=1e-4,1e-3"])`); each is ended when the test ends."""
    opened = []

    def _open(swept: list[str], uri: str = None) -> InProcessSweep:
        opened.append(InProcessSweep(uri or store, tmp_path / f"multirun-{len(opened)}", swept))
        return opened[-1]

    yield _open
    for s in opened:
        s.end()


# ---------------------------------------------------------------- one real digits sweep for the session

# `python -m sweeps.train -m` as a user types it, in a fresh process, into the default store
# (mlruns/mlflow.db in the folder it runs in), with the saved models: read by test_api.py (the
# `sweeps.load_sweep` API) and by test_readme.py (the README's Python blocks run in its folder).
SEED_SWEEP = ["reg=l1,l2", "seed=0,1", "rate=1e-2", "data=digits", "epochs=2", "model.hidden=[16]", "batch_size=64"]


def minimal_env(home: Path) -> dict:
    """Only PATH (this venv first) and HOME: no MLFLOW_TRACKING_URI or other settings of the caller."""
    import sys

    return {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(home)}


@pytest.fixture(scope="session")
def seed_sweep(tmp_path_factory) -> dict:
    """reg=l1,l2 seed=0,1 on digits (4 jobs, 2 epochs), trained once for the session by the CLI."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("seed-sweep")
    proc = subprocess.run([sys.executable, "-m", "sweeps.train", "-m", *SEED_SWEEP], cwd=folder,
                          env=minimal_env(folder), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    uri = f"sqlite:///{folder}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name("sweeps").experiment_id])
                 if r.data.tags.get("sweeps.kind") == "sweep"]
    return {"folder": folder, "uri": uri, "id": parent.info.run_id, "client": client, "command": " ".join(SEED_SWEEP),
            "env": minimal_env(folder)}


# ---------------------------------------------------------------- one real tracking server for the session

SERVER_SECRET = "pw-9d8c7b6a5f"


def _free_port() -> int:
    from sweeps.server import free_port

    return free_port()


def _healthy(port: int) -> bool:
    from sweeps.server import healthy

    return healthy(port, timeout=2)


@pytest.fixture(scope="session")
def _server_process(tmp_path_factory):
    """`mlflow server` on a free 127.0.0.1 port over SQLite, artifacts proxied into its folder, started
    (not yet answering); stopped with its workers when the session ends."""
    import subprocess

    from sweeps.server import mlflow_command, stop_process_group

    folder = tmp_path_factory.mktemp("server")
    port = _free_port()
    log = open(folder / "server.log", "w")
    command, env = mlflow_command(f"sqlite:///{folder}/server.db", "127.0.0.1", port, 1, folder / "server-artifacts")
    proc = subprocess.Popen(command, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "folder": folder, "proc": proc}
    finally:
        stop_process_group(proc, timeout=20)
        log.close()


def _wait_healthy(server: dict, timeout: float = 120) -> str:
    """'' once the server answers, else why not."""
    import time

    deadline = time.monotonic() + timeout
    while not _healthy(server["port"]):
        if server["proc"].poll() is not None or time.monotonic() > deadline:
            return f"mlflow server did not come up: {(server['folder'] / 'server.log').read_text()[-2000:]}"
        time.sleep(0.5)
    return ""


@pytest.fixture(scope="session")
def tracking_server(_server_process) -> dict:
    """The session's `mlflow server`, answering: {"url", "port", "folder"}."""
    problem = _wait_healthy(_server_process)
    if problem:
        pytest.fail(problem)
    return {k: _server_process[k] for k in ("url", "port", "folder")}


@pytest.fixture(scope="session")
def _server_sweep_started(_server_process, tmp_path_factory):
    """`python -m sweeps.train -m reg=l1,l2 ...` against the session's server, its URI carrying
    user:password@ (tracking.uri), run in a thread as soon as the server answers."""
    import os
    import subprocess
    import sys
    import threading

    work = tmp_path_factory.mktemp("server-sweep")
    uri = f"http://alice:{SERVER_SECRET}@127.0.0.1:{_server_process['port']}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}  # tracking.uri wins over it
    outcome = {"work": work}

    def run():
        try:
            outcome["problem"] = _wait_healthy(_server_process)
            if not outcome["problem"]:
                popen = outcome["popen"] = subprocess.Popen(
                    [sys.executable, "-m", "sweeps.train", "-m", "reg=l1,l2", "data=digits", "epochs=1",
                     "model.hidden=[16]", f"tracking.uri={uri}"],
                    cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                out, err = popen.communicate(timeout=600)
                outcome["proc"] = subprocess.CompletedProcess(popen.args, popen.returncode, out, err)
        except Exception as err:  # noqa: BLE001 - reported by the tests that read the sweep
            outcome["problem"] = repr(err)

    thread = threading.Thread(target=run, name="server-sweep", daemon=True)
    thread.start()
    try:
        yield thread, outcome
    finally:  # before the server stops; a session cut short (Ctrl-C) does not wait for the sweep
        if "popen" in outcome and outcome["popen"].poll() is None:
            outcome["popen"].kill()
        thread.join(timeout=60)


@pytest.fixture(scope="session", autouse=True)
def _start_the_server_sweep_early(request):
    """When a selected test reads the server sweep, start the server and the sweep when the session
    starts: both run beside the first tests (on the core those leave idle) instead of in front of theirs."""
    if any("server_sweep" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("_server_sweep_started")


@pytest.fixture(scope="session")
def server_sweep(tracking_server, _server_sweep_started) -> dict:
    """The sweep against the session's server: read by test_server.py (the REST API) and by
    test_faults_cli.py (the password reaches no file and no output). Experiment `sweeps` of the
    server holds only it. {"url", "port", "folder" (the server's), "work" (the command's folder), "proc"}."""
    thread, outcome = _server_sweep_started
    thread.join(timeout=660)
    if thread.is_alive() or outcome.get("problem") or "proc" not in outcome:
        pytest.fail(f"the server sweep did not run: {outcome.get('problem') or 'still running after 660 s'}")
    return {**tracking_server, "work": outcome["work"], "proc": outcome["proc"]}
