"""Loaders on small real files the tests write; look-up order, checksums, splits and scaling."""

import gzip
import hashlib

import numpy as np
import pytest

from conftest import write_cal_housing, write_idx, write_kaggle_csv
from sweeps.training import data
from sweeps.training.data import DataError, download, load_dataset, read_idx, read_pixel_csv


def test_read_idx_roundtrip_gz_and_plain(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (7, 28, 28))
    for name in ("a-idx3-ubyte.gz", "a-idx3-ubyte"):
        np.testing.assert_array_equal(read_idx(write_idx(tmp_path / name, images)), images)


def test_truncated_idx_names_the_file(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((5, 28, 28)))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="x-idx3-ubyte: corrupt IDX"):
        read_idx(path)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"<html>not found</html>")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(path)


def test_broken_gzip_names_the_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: cannot read"):
        read_idx(path)


def test_fashion_mnist_from_data_root(make_cfg, idx_folder, offline):
    ds = load_dataset(make_cfg("data=fashion_mnist", f"data.root={idx_folder}").data)
    assert ds.input_dim == 784 and ds.n_classes == 10 and ds.task == "classification"
    assert ds.sizes() == {"n_train": 108, "n_val": 12, "n_test": 40}
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() <= 1
    assert ds.source == str(idx_folder)


def test_lookup_order_root_then_env_dir(make_cfg, idx_folder, tmp_path, offline, monkeypatch):
    env_root = tmp_path / "env"
    (env_root / "fashion_mnist").mkdir(parents=True)
    for f in idx_folder.iterdir():
        (env_root / "fashion_mnist" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("SWEEPS_DATA_DIR", str(env_root))
    assert load_dataset(make_cfg("data=fashion_mnist").data).source == str(env_root / "fashion_mnist")
    assert load_dataset(make_cfg("data=fashion_mnist", f"data.root={idx_folder}").data).source == str(idx_folder)


def test_offline_and_missing_says_where_it_looked_and_three_fixes(make_cfg, offline):
    with pytest.raises(DataError) as err:
        load_dataset(make_cfg("data=fashion_mnist").data)
    msg = str(err.value)
    assert "Looked in:" in msg and str(offline / "keras") in msg and str(offline / "cache") in msg
    assert "data.root=" in msg and "SWEEPS_DATA_DIR" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert not list((offline / "cache").rglob("*.gz")), "nothing half-downloaded is left behind"


def test_download_checks_the_checksum_and_caches(tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(b"idx bytes" * 100)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "payload.bin"
    assert download(src.as_uri(), dest, "md5", md5).read_bytes() == src.read_bytes()
    bad = tmp_path / "cache2" / "payload.bin"
    with pytest.raises(DataError, match="checksum"):
        download(src.as_uri(), bad, "md5", "0" * 32)
    assert not any(bad.parent.iterdir()), "a corrupt download leaves no file"


def test_mnist_downloads_from_a_mirror_with_the_published_checksums(make_cfg, idx_folder, offline, monkeypatch):
    published = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in idx_folder.iterdir()}
    monkeypatch.setitem(data.IDX_MD5, "mnist", published)
    monkeypatch.setitem(data.MIRRORS, "mnist", [(offline / "dead").as_uri() + "/", idx_folder.as_uri() + "/"])
    ds = load_dataset(make_cfg("data=mnist").data)
    assert ds.sizes()["n_test"] == 40 and ds.source == str(offline / "cache" / "mnist")
    assert sorted(p.name for p in (offline / "cache" / "mnist").iterdir()) == sorted(published)


def test_mnist_from_keras_npz_cache(make_cfg, offline):
    rng = np.random.default_rng(0)
    (offline / "keras" / "datasets").mkdir(parents=True)
    np.savez(offline / "keras" / "datasets" / "mnist.npz", x_train=rng.integers(0, 256, (50, 28, 28)),
             y_train=np.arange(50) % 10, x_test=rng.integers(0, 256, (20, 28, 28)), y_test=np.arange(20) % 10)
    ds = load_dataset(make_cfg("data=mnist", "data.val_split=0.2").data)
    assert ds.sizes() == {"n_train": 40, "n_val": 10, "n_test": 20} and ds.source.endswith("mnist.npz")


def test_kaggle_csv_layout(make_cfg, tmp_path, offline):
    write_kaggle_csv(tmp_path / "fashion-mnist_train.csv", 30)
    write_kaggle_csv(tmp_path / "fashion-mnist_test.csv", 10)
    ds = load_dataset(make_cfg("data=fashion_mnist_csv", f"data.root={tmp_path}", "data.val_split=0").data)
    assert ds.x_train.shape == (30, 784) and ds.x_test.shape == (10, 784) and ds.x_train.max() <= 1.0
    np.testing.assert_array_equal(ds.y_test, np.arange(10))


def test_csv_with_missing_columns_names_them(tmp_path):
    path = write_kaggle_csv(tmp_path / "t.csv", 3, drop={"pixel5", "label"})
    with pytest.raises(DataError, match=r"t.csv: missing columns label, pixel5"):
        read_pixel_csv(path)


def test_csv_export_reads_back(tmp_path, idx_folder):
    raw = data.load_idx_dataset("fashion_mnist", str(idx_folder))
    train_csv, _ = data.export_csv(raw, tmp_path / "csv")
    x, y = read_pixel_csv(train_csv)
    np.testing.assert_array_equal(x, raw.x)
    np.testing.assert_array_equal(y, raw.y)


def test_california_housing_archive(make_cfg, tmp_path, offline):
    rows = write_cal_housing(tmp_path)
    raw = data.load_california_housing(str(tmp_path))
    assert raw.x.shape == (50, 8)
    np.testing.assert_allclose(raw.x[:, 0], rows[:, 7], rtol=1e-4)  # median income first, as scikit-learn
    np.testing.assert_allclose(raw.x[:, 2], rows[:, 3] / rows[:, 6], rtol=1e-3)  # rooms per household
    np.testing.assert_allclose(raw.y, rows[:, 8] / 1e5, rtol=1e-4)
    ds = load_dataset(make_cfg("data=california_housing", f"data.root={tmp_path}").data)
    assert ds.task == "regression" and ds.n_classes is None and ds.y_train.dtype == np.float32


def test_california_offline_error(make_cfg, offline):
    with pytest.raises(DataError, match="california_housing: cal_housing.tgz not found"):
        load_dataset(make_cfg("data=california_housing").data)


def test_standardize_is_fitted_on_the_training_split_only(make_cfg):
    ds = load_dataset(make_cfg("data=digits").data)
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-5)
    raw = data.load_digits_raw()
    # refit by hand: the same split, statistics from the training part only
    from sklearn.model_selection import train_test_split

    x, _, _, _ = train_test_split(raw.x, raw.y, test_size=0.2, random_state=0)
    x, x_val, _, _ = train_test_split(x, x[:, 0], test_size=0.1, random_state=0)
    std = x.std(axis=0)
    std[std == 0] = 1
    np.testing.assert_allclose(ds.x_val, (x_val - x.mean(axis=0)) / std, rtol=1e-4, atol=1e-5)
    assert abs(ds.x_val.mean()) > 1e-4, "validation statistics were not used"


def test_val_split_is_seeded_and_limit_takes_the_first_examples(make_cfg):
    a = load_dataset(make_cfg("data=digits", "data.val_seed=3").data)
    b = load_dataset(make_cfg("data=digits", "data.val_seed=3").data)
    c = load_dataset(make_cfg("data=digits", "data.val_seed=4").data)
    np.testing.assert_array_equal(a.y_val, b.y_val)
    assert not np.array_equal(a.x_val, c.x_val)
    small = load_dataset(make_cfg("data=digits", "data.limit=100").data)
    assert small.sizes() == {"n_train": 90, "n_val": 10, "n_test": 360}


def test_validation_on_the_test_set(make_cfg):
    ds = load_dataset(make_cfg("data=digits", "data.validation=test").data)
    np.testing.assert_array_equal(ds.x_val, ds.x_test)
    assert len(ds.x_train) == 1437


def test_circles_are_two_rings(make_cfg):
    ds = load_dataset(make_cfg("data=circles", "data.noise=0.0").data)
    assert ds.input_dim == 2 and ds.n_classes == 2 and len(ds.x_test) == 250
    radius = np.linalg.norm(ds.x_train, axis=1)
    assert radius[ds.y_train == 1].max() < radius[ds.y_train == 0].min()  # inner ring is class 1


def test_raw_files_are_read_once_per_process(make_cfg, idx_folder, offline, monkeypatch):
    calls = []
    real = data.read_idx
    monkeypatch.setattr(data, "read_idx", lambda p: calls.append(p) or real(p))
    for rate in ("1e-4", "1e-3"):
        load_dataset(make_cfg("data=fashion_mnist", f"data.root={idx_folder}", f"rate={rate}").data)
    assert len(calls) == 4


def test_a_process_prepares_each_dataset_once_and_shares_it_read_only(make_cfg):
    a = load_dataset(make_cfg("data=digits", "data.val_seed=5").data)
    assert load_dataset(make_cfg("data=digits", "data.val_seed=5").data) is a  # the next job of a sweep
    assert load_dataset(make_cfg("data=digits", "data.val_seed=6").data) is not a
    with pytest.raises(ValueError, match="read-only"):
        a.x_train[0, 0] = 1.0  # a job cannot change what the process's later jobs see


def test_a_process_reuses_a_prepared_dataset_until_it_is_released(make_cfg):
    """The jobs of a sweep in one worker share the arrays; `release()` lets them go (a notebook
    between sweeps): the next job reads and prepares them again, to equal values."""
    cfg = make_cfg("data=digits").data
    first = load_dataset(cfg)
    assert load_dataset(cfg) is first and data.PREPARED.values and data.RAW.values
    data.release()
    assert not data.PREPARED.values and not data.RAW.values
    again = load_dataset(cfg)
    assert again is not first and np.array_equal(again.x_train, first.x_train)
    for limit in range(1, 7):  # more settings than the cache holds: the oldest is dropped, not kept for ever
        load_dataset(make_cfg("data=digits", f"data.limit={100 + limit}").data)
    assert len(data.PREPARED.values) == data.PREPARED.size and load_dataset(cfg) is not again
