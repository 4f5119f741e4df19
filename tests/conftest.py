"""Shared fixtures: configs composed like the command line does, a throwaway MLflow store, small data."""

from __future__ import annotations

import gzip
import io
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
    from sweeps import data

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("SWEEPS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SWEEPS_DATA_DIR", raising=False)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})
    dead = (tmp_path / "no-such-mirror").as_uri() + "/"
    monkeypatch.setattr(data, "MIRRORS", {"fashion_mnist": [dead], "mnist": [dead]})
    monkeypatch.setitem(data.CALIFORNIA, "url", dead + "cal_housing.tgz")
    data._load_raw.cache_clear()
    yield tmp_path
    data._load_raw.cache_clear()


class InProcessSweep:
    """A sweep opened the way the sweeper opens one; `job()` is what the launcher hands each job.

    Jobs then run in this process with `train(cfg, sweep.job(overrides))`; `end()` reads them back
    from the store and ends the parent, as the sweeper does when the launcher returns.
    """

    def __init__(self, uri: str, sweep_dir: Path, swept: list[str], experiment: str = "sweeps", command: str = ""):
        from omegaconf import OmegaConf

        from sweeps import sweep, tracking

        self.tracker = tracking.connect(OmegaConf.create({"uri": uri, "experiment": experiment, "artifact_root": None}))
        self.sweep_dir = str(sweep_dir)
        self.parent_run_id = sweep.open_parent(self.tracker, command or " ".join(swept), self.sweep_dir,
                                               [s.split("=")[0] for s in swept], 0)
        self.launched = 0
        self.outcome = None

    def job(self, overrides: list[str]):
        from sweeps.job import JobContext

        self.launched += 1
        return JobContext(tuple(overrides), self.sweep_dir)

    def end(self):
        from sweeps import sweep

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
