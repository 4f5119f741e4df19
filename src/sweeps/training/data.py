"""Datasets: find or download the files; read, split and scale them once per process.

`load_dataset(cfg.data)` returns a `Dataset` with train/validation/test arrays. File-based
datasets are looked up, in order, in `data.root`, `$SWEEPS_DATA_DIR/<name>`, the system folder
of a Debian data package, the Keras cache, and the sweeps download cache; a missing file is then
downloaded from the published mirrors and checked against the published checksum.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import math
import os
import struct
import sys
import tarfile
import tempfile
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import OmegaConf

from sweeps.config import DataConfig, DatasetName, Scale, Task, Validation
from sweeps.errors import DataError

log = logging.getLogger(__name__)

IDX_FILES = {  # role -> file name (without .gz)
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# Published MD5s of the gzipped IDX files (Zalando's and LeCun's releases).
IDX_MD5 = {
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
}
MIRRORS = {
    "fashion_mnist": [
        "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ],
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
}
SYSTEM_DIRS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}  # apt: dataset-fashion-mnist
KERAS_DIRS = {"fashion_mnist": "fashion-mnist", "mnist": ""}  # under ~/.keras/datasets
CALIFORNIA = {
    "file": "cal_housing.tgz",
    "url": "https://ndownloader.figshare.com/files/5976036",
    "sha256": "aaa5c9a6afe2225cc2aed2723682ae403280c4a3695a2ddda4ffb5d8215ea681",
}
CSV_DEFAULTS = ("fashion-mnist_train.csv", "fashion-mnist_test.csv")  # Kaggle's file names
N_PIXELS = 784
N_CLASSES = 10  # the Kaggle CSV layout holds Fashion-MNIST: labels 0..9
MNIST_IMAGE = (28, 28, 1)  # MNIST and Fashion-MNIST: 28x28 grey images (stored flat)
DIGITS_IMAGE = (8, 8, 1)
MIN_ROWS = 10  # your data: fewer examples cannot give a training, a validation and a test set
MAX_INFERRED_CLASSES = 50  # labels that are whole numbers with at most this many values are classes


@dataclass
class Dataset:
    """Arrays ready for Keras: float32 features, int labels (classification) or float targets."""

    name: str
    task: str  # "classification" | "regression"
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: Optional[int]  # None for regression
    source: str  # where the data came from (folder, file or generator)
    image_shape: Optional[tuple] = None  # (height, width, channels) when the features are an image's pixels
    eval_batches: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # built from the
    # arrays once, kept for the process's later jobs (`fitting.evaluation_batches`); not copied by `replace`

    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    def sizes(self) -> dict:
        return {"n_train": len(self.x_train), "n_val": len(self.x_val), "n_test": len(self.x_test)}


@dataclass
class Raw:
    """What a loader read: a training set and, when the dataset has one, a test set."""

    x: np.ndarray
    y: np.ndarray
    x_test: Optional[np.ndarray]
    y_test: Optional[np.ndarray]
    source: str
    task: str = Task.classification.value
    image_shape: Optional[tuple] = None


# ---------------------------------------------------------------- downloads and file look-up


def cache_dir(name: str) -> Path:
    """Where downloads go: $SWEEPS_CACHE_DIR/<name>, default ~/.cache/sweeps/<name>."""
    base = os.environ.get("SWEEPS_CACHE_DIR") or Path.home() / ".cache" / "sweeps"
    return Path(base) / name


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, algorithm: str, expected: str, timeout: float = 30) -> Path:
    """Download `url` to `dest`, verifying its checksum; nothing is left at `dest` on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        got = file_digest(Path(tmp), algorithm)
        if got != expected:
            raise DataError(f"{url}: {algorithm} checksum {got} does not match the published {expected}; "
                            "the download is corrupt or the mirror changed: retry, or place the file yourself")
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _candidate_dirs(name: str, root: Optional[str]) -> list[Path]:
    """Where to look: an explicit `data.root` only (no silent fallback), else the usual places."""
    if root:
        return [Path(root).expanduser()]
    dirs = []
    if os.environ.get("SWEEPS_DATA_DIR"):
        dirs.append(Path(os.environ["SWEEPS_DATA_DIR"]).expanduser() / name)
    if name in SYSTEM_DIRS:
        dirs.append(SYSTEM_DIRS[name])
    if name in KERAS_DIRS:
        keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
        dirs.append(keras_home / "datasets" / KERAS_DIRS[name])
    dirs.append(cache_dir(name))
    return dirs


def _root_error(root: str, wanted: str) -> DataError:
    return DataError(f"data.root={root} does not hold {wanted}; point data.root at the folder that does, "
                     "or drop it (data.root=null) to use the usual places")


def _not_found(name: str, looked: list[Path], wanted: str, reason: str) -> DataError:
    fixes = [f"set data.root=/path/to/folder holding {wanted}",
             f"export SWEEPS_DATA_DIR=/path/to/data (files in $SWEEPS_DATA_DIR/{name}/)"]
    if name == "fashion_mnist":
        fixes.append("install the Debian package: apt-get install dataset-fashion-mnist")
    else:
        fixes.append("run once with internet access so the files are downloaded and cached")
    where = "\n".join(f"  - {d}" for d in looked)
    how = "\n".join(f"  {i}. {f}" for i, f in enumerate(fixes, 1))
    return DataError(f"{name}: {wanted} not found ({reason}). Looked in:\n{where}\nFix it in one of three ways:\n{how}")


# ---------------------------------------------------------------- readers


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a uint8 array, checking its header and size."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            blob = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err}); delete it so it is fetched again") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number); delete or replace it")
    ndim = blob[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", blob[4:header]) if len(blob) >= header else ()
    expected = int(np.prod(dims)) if dims else -1
    if len(dims) != ndim or len(blob) - header != expected:
        raise DataError(f"{path}: corrupt IDX file (header says {dims}, found {len(blob) - header} data bytes); "
                        "delete or replace it")
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder: Path) -> Optional[dict[str, Path]]:
    found = {}
    for role, stem in IDX_FILES.items():
        path = next((folder / f for f in (stem + ".gz", stem) if (folder / f).is_file()), None)
        if path is None:
            return None
        found[role] = path
    return found


def _idx_from_files(files: dict[str, Path], source: str) -> Raw:
    arr = {role: read_idx(path) for role, path in files.items()}
    for split in ("train", "test"):
        x, y = arr[f"x_{split}"], arr[f"y_{split}"]
        if len(x) != len(y):
            raise DataError(f"{files['x_' + split]}: {len(x)} images but {len(y)} labels in "
                            f"{files['y_' + split].name}; the files do not belong together")
    flat = {k: v.reshape(len(v), -1) if k.startswith("x") else v for k, v in arr.items()}
    return Raw(flat["x_train"], flat["y_train"], flat["x_test"], flat["y_test"], source, image_shape=MNIST_IMAGE)


def _download_idx(name: str) -> dict[str, Path]:
    target, last_error = cache_dir(name), None
    for fname, md5 in IDX_MD5[name].items():
        if (target / fname).is_file() and file_digest(target / fname, "md5") == md5:
            continue
        for mirror in MIRRORS[name]:
            try:
                log.info("downloading %s%s", mirror, fname)
                download(mirror + fname, target / fname, "md5", md5)
                break
            except (OSError, DataError) as err:  # URLError is an OSError
                last_error = err
        else:
            raise _not_found(name, _candidate_dirs(name, None), "the four IDX files",
                             f"download failed: {last_error}")
    return _find_idx(target)


def load_idx_dataset(name: str, root: Optional[str]) -> Raw:
    """MNIST-style IDX files, or Keras' mnist.npz, from the first place that has them."""
    for folder in _candidate_dirs(name, root):
        files = _find_idx(folder)
        if files:
            return _idx_from_files(files, str(folder))
        npz = folder / "mnist.npz"
        if name == "mnist" and npz.is_file():
            with np.load(npz) as z:
                return Raw(z["x_train"].reshape(-1, N_PIXELS), z["y_train"],
                           z["x_test"].reshape(-1, N_PIXELS), z["y_test"], str(npz), image_shape=MNIST_IMAGE)
    if root:
        raise _root_error(root, "the four IDX files" + (" or mnist.npz" if name == "mnist" else ""))
    return _idx_from_files(_download_idx(name), str(cache_dir(name)))


def read_pixel_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Kaggle's layout: a `label` column then `pixel1`..`pixel784`."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read as CSV ({err})") from None
    wanted = ["label"] + [f"pixel{i}" for i in range(1, N_PIXELS + 1)]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{path}: missing columns {shown}; expected the Kaggle layout label,pixel1..pixel784")
    values = frame[wanted].apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        row = int(values.isna().any(axis=1).to_numpy().argmax())
        raise DataError(f"{path}: non-numeric or empty value in data row {row + 1}; fix or re-export the file")
    arr = values.to_numpy()
    pixels, labels = arr[:, 1:], arr[:, 0]
    bad = ((pixels < 0) | (pixels > 255) | (pixels != np.round(pixels))).any(axis=1)
    if bad.any():  # uint8 would wrap 256 around to 0 and cut 0.5 to 0, silently
        row = int(bad.argmax())
        raise DataError(f"{path}: data row {row + 1} has a pixel outside the grey levels 0..255 (or not a whole "
                        "number); fix or re-export the file")
    bad = (labels < 0) | (labels >= N_CLASSES) | (labels != np.round(labels))
    if bad.any():  # a label of 12 would widen the model to 13 outputs, a negative one breaks the loss
        row = int(bad.argmax())
        raise DataError(f"{path}: data row {row + 1} has label {labels[row]:g}, not a class 0..{N_CLASSES - 1}; "
                        "fix or re-export the file")
    return pixels.astype(np.uint8), labels.astype(np.int64)


def load_csv_dataset(name: str, root: Optional[str], train_file: str, test_file: str) -> Raw:
    looked = _candidate_dirs(name, root) if root else _candidate_dirs(name, None)[:-1]  # no download: Kaggle needs an account
    for folder in looked:
        if (folder / train_file).is_file() and (folder / test_file).is_file():
            x, y = read_pixel_csv(folder / train_file)
            x_test, y_test = read_pixel_csv(folder / test_file)
            return Raw(x, y, x_test, y_test, str(folder), image_shape=MNIST_IMAGE)
    if root:
        raise _root_error(root, f"{train_file} and {test_file}")
    err = _not_found(name, looked, f"{train_file} and {test_file}", "no folder has both")
    raise DataError(f"{err}\n  (or write them from the IDX files: python -m sweeps.training.data csv DIR)")


def export_csv(raw: Raw, folder: Path, names: tuple[str, str] = CSV_DEFAULTS) -> list[Path]:
    """Write a dataset in Kaggle's CSV layout (used to make `fashion_mnist_csv` from the IDX files)."""
    folder.mkdir(parents=True, exist_ok=True)
    header = "label," + ",".join(f"pixel{i}" for i in range(1, N_PIXELS + 1))
    paths = []
    for fname, x, y in ((names[0], raw.x, raw.y), (names[1], raw.x_test, raw.y_test)):
        rows = np.column_stack([y, x.reshape(len(x), -1)]).astype(np.int64)
        np.savetxt(folder / fname, rows, fmt="%d", delimiter=",", header=header, comments="")
        paths.append(folder / fname)
    return paths


def _read_cal_housing(archive: Path) -> np.ndarray:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("cal_housing.data"))
            return np.loadtxt(io.BytesIO(tar.extractfile(member).read()), delimiter=",")
    except (OSError, tarfile.TarError, StopIteration, ValueError) as err:
        raise DataError(f"{archive}: not the California housing archive ({err!r}); delete or replace it") from None


def load_california_housing(root: Optional[str]) -> Raw:
    """StatLib's California housing, with the 8 features scikit-learn derives from it."""
    name = "california_housing"
    looked = _candidate_dirs(name, root)
    path = next((d / CALIFORNIA["file"] for d in looked if (d / CALIFORNIA["file"]).is_file()), None)
    if path is None and root:
        raise _root_error(root, CALIFORNIA["file"])
    if path is None:
        path = cache_dir(name) / CALIFORNIA["file"]
        try:
            download(CALIFORNIA["url"], path, "sha256", CALIFORNIA["sha256"])
        except (OSError, DataError) as err:
            raise _not_found(name, looked, CALIFORNIA["file"], f"download failed: {err}") from None
    d = _read_cal_housing(path)
    # columns: longitude, latitude, age, rooms, bedrooms, population, households, income, value
    households = d[:, 6]
    x = np.column_stack([d[:, 7], d[:, 2], d[:, 3] / households, d[:, 4] / households,
                         d[:, 5], d[:, 5] / households, d[:, 1], d[:, 0]])
    return Raw(x, d[:, 8] / 100_000.0, None, None, str(path), Task.regression.value)


def load_digits_raw() -> Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return Raw(bunch.data, bunch.target, None, None, "sklearn.datasets.load_digits", image_shape=DIGITS_IMAGE)


def load_circles_raw(n_samples: int, noise: float, factor: float, seed: int) -> Raw:
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=n_samples, noise=noise, factor=factor, random_state=seed)
    return Raw(x, y, None, None, f"sklearn.datasets.make_circles(noise={noise}, factor={factor})")


# ---------------------------------------------------------------- your data: a CSV, an .npz, a loader


def _labels(where: str, y: np.ndarray, y_test: Optional[np.ndarray], task: Optional[Task]):
    """Labels as the task needs them: classes numbered 0..K-1 in sorted order (strings too), or
    float targets; `task` None decides from the labels (whole numbers with few values: classes)."""
    both = y if y_test is None else np.concatenate([y, y_test])
    numeric = np.issubdtype(both.dtype, np.number) or both.dtype == bool
    if task is None:
        whole = numeric and bool(np.all(np.isfinite(both.astype(float)))) and bool(np.all(both == np.round(both)))
        few = len(np.unique(both)) <= MAX_INFERRED_CLASSES
        task = Task.classification if (not numeric or (whole and few)) else Task.regression
    if task == Task.regression:
        if not numeric:
            raise DataError(f"{where}: the labels are not numbers ({both[0]!r}), so they cannot be a regression's "
                            "targets; use data.task=classification")
        return y.astype(np.float32), None if y_test is None else y_test.astype(np.float32), task.value
    if numeric and not np.all(both == np.round(both)):
        bad = both[both != np.round(both)][0]
        raise DataError(f"{where}: label {bad:g} is not a class (not a whole number); use data.task=regression")
    _, index = np.unique(both.astype(str) if not numeric else both, return_inverse=True)
    if len(np.unique(index)) < 2:
        raise DataError(f"{where}: every label is the same class; a classifier needs at least two")
    index = index.astype(np.int64)
    return index[: len(y)], None if y_test is None else index[len(y):], task.value


def _user_raw(where: str, arrays: dict, source: str, task: Optional[Task]) -> Raw:
    """Arrays named `x_train`, `y_train` (and `x_test`, `y_test`, both or neither) checked and shaped:
    numeric finite features, one label per example, images (N, H, W[, C]) kept flat with their shape."""
    names = sorted(arrays)
    if "x_train" not in arrays or "y_train" not in arrays:
        raise DataError(f"{where}: needs arrays x_train and y_train (found {', '.join(names) or 'none'})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{where}: has {'x_test' if 'x_test' in arrays else 'y_test'} without its partner; give "
                        "both x_test and y_test, or neither (a test set is then split off)")
    x, y = np.asarray(arrays["x_train"]), np.asarray(arrays["y_train"])
    x_test = np.asarray(arrays["x_test"]) if "x_test" in arrays else None
    y_test = np.asarray(arrays["y_test"]) if "y_test" in arrays else None
    image_shape = None
    for role, xs, ys in (("train", x, y), ("test", x_test, y_test)):
        if xs is None:
            continue
        if xs.ndim < 2 or not (np.issubdtype(xs.dtype, np.number) or xs.dtype == bool):
            raise DataError(f"{where}: x_{role} must be numbers shaped (examples, features...), not "
                            f"{xs.dtype} of shape {xs.shape}")
        if not np.all(np.isfinite(xs)):
            raise DataError(f"{where}: x_{role} holds NaN or infinite values; fill or drop them first")
        if ys.ndim == 2 and ys.shape[1] == 1:
            ys = ys.ravel()
        if ys.ndim != 1 or len(ys) != len(xs):
            raise DataError(f"{where}: x_{role} has {len(xs)} examples but y_{role} has shape {ys.shape}; "
                            "give one label per example")
        if role == "train":
            y = ys
        else:
            y_test = ys
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{where}: x_test's examples are shaped {x_test.shape[1:]}, x_train's {x.shape[1:]}")
    if len(x) < MIN_ROWS:
        raise DataError(f"{where}: only {len(x)} training examples; sweeps needs at least {MIN_ROWS} "
                        "(training, validation and test sets are split from them)")
    if x.ndim in (3, 4):  # images: (N, H, W) grey or (N, H, W, C)
        image_shape = tuple(int(d) for d in x.shape[1:]) + ((1,) if x.ndim == 3 else ())
    flat = lambda a: None if a is None else a.reshape(len(a), -1)  # noqa: E731
    y, y_test, task_name = _labels(where, y, y_test, task)
    return Raw(flat(x), y, flat(x_test), y_test, source, task_name, image_shape)


def read_table_csv(path: Path, target: str, features: Optional[tuple], task: Optional[Task]) -> Raw:
    """A CSV with a header: column `target` is the label, the `features` columns (default: every other
    column) numeric features."""
    import pandas as pd

    where = f"data.path={path}"
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{where}: cannot read as CSV ({str(err).splitlines()[0]})") from None
    if target not in frame.columns:
        import difflib

        close = difflib.get_close_matches(target, [str(c) for c in frame.columns], n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        shown = ", ".join(map(str, frame.columns[:8])) + (" ..." if len(frame.columns) > 8 else "")
        raise DataError(f"data.target={target}: no such column in {path}; {hint}(columns: {shown})")
    missing = [c for c in features or () if c not in frame.columns]
    if missing:
        raise DataError(f"data.features: no column {missing[0]} in {path} (columns: "
                        f"{', '.join(map(str, frame.columns[:8]))}{' ...' if len(frame.columns) > 8 else ''})")
    features = list(features) if features else [c for c in frame.columns if c != target]
    if target in features:
        raise DataError(f"data.features lists the target {target}; a label cannot be a feature of itself")
    if not features:
        raise DataError(f"{where}: no feature columns beside data.target={target}")
    if frame[target].isna().any():
        row = int(frame[target].isna().to_numpy().argmax())
        raise DataError(f"{where}: data row {row + 1} has no {target}; fill or drop the row")
    values = frame[features].apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        bad = values.isna().to_numpy()
        row, col = (int(i) for i in np.argwhere(bad)[0])
        cell = frame[features].iat[row, col]
        what = "is empty" if pd.isna(cell) else f"holds {str(cell)[:20]!r}, not a number"
        raise DataError(f"{where}: data row {row + 1}, column {features[col]} {what}; fix the file "
                        "(or drop the column)")
    labels = frame[target].to_numpy()
    if labels.dtype == object:
        numbers = pd.to_numeric(frame[target], errors="coerce")
        labels = numbers.to_numpy() if not numbers.isna().any() else labels.astype(str)
    return _user_raw(where, {"x_train": values.to_numpy(np.float32), "y_train": labels}, str(path), task)


def read_npz(path: Path, task: Optional[Task]) -> Raw:
    import zipfile

    where = f"data.path={path}"
    if not zipfile.is_zipfile(path):
        raise DataError(f"{where}: cannot read as .npz (not a zip of arrays); write it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as err:
        raise DataError(f"{where}: holds Python objects ({str(err).splitlines()[0][:60]}...); save plain "
                        "numeric arrays with numpy.savez") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{where}: cannot read as .npz ({err}); write it with numpy.savez") from None
    return _user_raw(where, arrays, str(path), task)


def call_loader(target: str, kwargs: dict, task: Optional[Task]) -> Raw:
    """`data._target_`: your function, called with `data.kwargs`, returning (x, y), (x, y, x_test,
    y_test) or a dict of x_train, y_train[, x_test, y_test]."""
    where = f"data._target_={target}"
    loader = locate(where, target)
    try:
        out = loader(**kwargs)
    except Exception as err:  # noqa: BLE001 - the user's code: said in one line naming it
        raise DataError(f"{where} raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}; "
                        "fix the loader") from None
    if isinstance(out, tuple) and len(out) in (2, 4):
        out = dict(zip(("x_train", "y_train", "x_test", "y_test"), out))
    if not isinstance(out, dict):
        raise DataError(f"{where} returned {type(out).__name__}; return (x, y), (x, y, x_test, y_test) or a dict "
                        "with x_train, y_train (and x_test, y_test)")
    return _user_raw(where, out, f"{target}()", task)


def locate(where: str, target: str):
    """The function a `_target_` names (`package.module.function`), imported; one line if it cannot be."""
    import importlib

    from sweeps.errors import ConfigError

    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ConfigError(f"{where}: no module {err.name} to import; check the name and that its package is on "
                          "PYTHONPATH") from None
    except Exception as err:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(f"{where}: importing {module_name} raised {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}") from None
    found = getattr(module, name, None)
    if not callable(found):
        raise ConfigError(f"{where}: {module_name} has no function {name}"
                          f"{'' if found is None else f' ({name} is a {type(found).__name__})'}")
    return found


# ---------------------------------------------------------------- the public entry point


class Cache:
    """A process's recently used values by key, at most `size` of them, the oldest dropped first.
    An object (not `functools.lru_cache`) so that what it holds can be released by name (`release`)."""

    def __init__(self, size: int):
        self.size, self.values = size, OrderedDict()

    def get(self, key: tuple, make):
        if key in self.values:
            self.values.move_to_end(key)
            return self.values[key]
        value = self.values[key] = make()
        if len(self.values) > self.size:
            self.values.popitem(last=False)
        return value

    def clear(self) -> None:
        self.values.clear()


RAW = Cache(8)  # files read (a sweep's jobs of several datasets or files share a worker)
PREPARED = Cache(4)  # split and scaled arrays (~0.2 GB for Fashion-MNIST): jobs of one sweep share them


def release() -> None:
    """Let go of every dataset this process read or prepared (a notebook between sweeps, a test)."""
    RAW.clear()
    PREPARED.clear()


def _load_raw(*key) -> Raw:
    return RAW.get(key, lambda: _read_raw(*key))


def _read_raw(name: DatasetName, root, train_file, test_file, circles: tuple, env: tuple, user: tuple = ()) -> Raw:
    """Read once per process (`RAW`): every job of a sweep reuses the arrays (the key covers what
    matters: for your data the file's size and modification time too, so an edited file is read again)."""
    path, target, features, task, loader, kwargs, _stamp = user or (None,) * 7
    readers = {  # one per `DatasetName`; what else is known of each: `config.DATASETS`
        DatasetName.fashion_mnist: lambda: load_idx_dataset(name.value, root),
        DatasetName.mnist: lambda: load_idx_dataset(name.value, root),
        DatasetName.fashion_mnist_csv: lambda: load_csv_dataset(name.value, root, train_file or CSV_DEFAULTS[0],
                                                                test_file or CSV_DEFAULTS[1]),
        DatasetName.california_housing: lambda: load_california_housing(root),
        DatasetName.digits: load_digits_raw,
        DatasetName.circles: lambda: load_circles_raw(*circles),
        DatasetName.csv: lambda: read_table_csv(Path(path).expanduser(), target, features, task),
        DatasetName.npz: lambda: read_npz(Path(path).expanduser(), task),
        DatasetName.custom: lambda: call_loader(loader, json.loads(kwargs), task),
    }
    return readers[name]()


def _split(x, y, fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=fraction, random_state=seed)


def _check_test_split(cfg: DataConfig, y, task: str) -> None:
    """The part a test split leaves must still hold a training and a validation example per class."""
    from sweeps.errors import ConfigError

    n = len(y)
    left = n - math.ceil((cfg.test_split or 0.2) * n)  # sklearn's rounding
    need = 2 * (1 if task == Task.regression.value else len(np.unique(y)))
    if left < need:
        raise ConfigError(f"data.test_split={cfg.test_split} leaves {left} of {n} examples for training and "
                          f"validation, fewer than {need}; use a smaller fraction, e.g. data.test_split=0.2")


def _scale(kind: Scale, x_train, *others):
    x_train = x_train.astype(np.float32)
    others = [o.astype(np.float32) for o in others]
    if kind == Scale.divide255:
        return [x_train / 255.0] + [o / 255.0 for o in others]
    if kind == Scale.standardize:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        return [(x_train - mean) / std] + [(o - mean) / std for o in others]
    return [x_train] + others


def _check_sizes(cfg: DataConfig, n_train: int, n_val: int, n_classes: int) -> None:
    """A split that leaves fewer training or validation examples than classes cannot be trained on."""
    from sweeps.errors import ConfigError

    need = max(2, n_classes)
    if n_train < need:
        raise ConfigError(f"data.val_split={cfg.val_split} / data.limit={cfg.limit} leave {n_train} training "
                          f"example(s), fewer than {need}; lower data.val_split or raise data.limit")
    if cfg.validation == Validation.split and cfg.val_split > 0 and n_val < n_classes:
        raise ConfigError(f"data.val_split={cfg.val_split} leaves {n_val} validation example(s) for {n_classes} "
                          "classes; raise data.val_split (or data.limit)")


def _hashable(value):
    """A setting as a key of the process's caches (lists as tuples)."""
    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return tuple(value) if isinstance(value, list) else value


def load_dataset(cfg: DataConfig) -> Dataset:
    """Train/validation/test arrays for one job, per `data.*` (see conf/data/*.yaml): the same
    (read-only) `Dataset` for the same settings within a process, so the jobs of a sweep split and
    scale the data once."""
    env = (os.environ.get("SWEEPS_DATA_DIR"), os.environ.get("SWEEPS_CACHE_DIR"))
    settings = tuple((f.name, _hashable(getattr(cfg, f.name))) for f in fields(DataConfig) if f.name != "kwargs")
    kwargs = getattr(cfg, "kwargs", None) or {}
    kwargs = OmegaConf.to_container(kwargs) if OmegaConf.is_config(kwargs) else kwargs
    path = getattr(cfg, "path", None)
    stamp = None
    if path and Path(path).expanduser().is_file():
        info = Path(path).expanduser().stat()
        stamp = (info.st_size, info.st_mtime_ns)
    return _prepared(settings, env, json.dumps(kwargs, sort_keys=True, default=str), stamp)


def _prepared(*key) -> Dataset:
    return PREPARED.get(key, lambda: _prepare(*key))


def _prepare(settings: tuple, env: tuple, kwargs: str = "{}", stamp: Optional[tuple] = None) -> Dataset:
    """`load_dataset`'s work for the `DataConfig` fields `settings` (name, value pairs), the loader's
    `kwargs` (JSON) and the data file's (size, mtime)."""
    cfg = DataConfig(**dict(settings), kwargs=json.loads(kwargs))
    circles = (cfg.n_samples, cfg.noise, cfg.factor, cfg.test_seed)
    user = (cfg.path, cfg.target, cfg.features, cfg.task, cfg._target_, kwargs, stamp)
    raw = _load_raw(cfg.name, cfg.root, cfg.train_file, cfg.test_file, circles, env, user)
    x, y, x_test, y_test = raw.x, raw.y, raw.x_test, raw.y_test
    if cfg.test_split is not None or x_test is None:
        _check_test_split(cfg, y, raw.task)
        x, x_test, y, y_test = _split(x, y, cfg.test_split or 0.2, cfg.test_seed)
    if cfg.limit:
        x, y = x[: cfg.limit], y[: cfg.limit]
    if cfg.validation == Validation.test:
        x_val, y_val = x_test, y_test
    elif cfg.val_split > 0:
        x, x_val, y, y_val = _split(x, y, cfg.val_split, cfg.val_seed)
    else:
        x_val, y_val = x[:0], y[:0]
    regression = raw.task == Task.regression.value
    _check_sizes(cfg, len(x), len(x_val), 1 if regression else len(np.unique(y)))
    x, x_val, x_test = _scale(cfg.scale, x, x_val, x_test)
    cast = (lambda a: a.astype(np.float32)) if regression else (lambda a: a.astype(np.int64))
    n_classes = None if regression else int(max(y.max(), y_test.max())) + 1
    arrays = (x, cast(y), x_val, cast(y_val), x_test, cast(y_test))
    for array in arrays:
        array.flags.writeable = False  # shared by every job of the process
    return Dataset(cfg.name.value, raw.task, *arrays, n_classes, raw.source, raw.image_shape)


def main(argv: list[str]) -> int:
    """`python -m sweeps.training.data csv DIR`: write Fashion-MNIST in Kaggle's CSV layout from the IDX files."""
    if len(argv) != 2 or argv[0] != "csv":
        print("usage: python -m sweeps.training.data csv DIR   (writes fashion-mnist_train.csv / _test.csv)")
        return 2
    try:
        raw = load_idx_dataset("fashion_mnist", None)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in export_csv(raw, Path(argv[1])):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
