"""conf/ is found from an editable checkout and from a built wheel (slow: builds the wheel)."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sweeps.config import conf_dir

ROOT = Path(__file__).resolve().parents[1]


def test_editable_checkout_finds_top_level_conf():
    assert conf_dir() == ROOT / "conf"


@pytest.mark.slow
def test_wheel_ships_conf_inside_the_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("sweeps-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sweeps/conf/config.yaml" in names and "sweeps/conf/reg/l1.yaml" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", "from sweeps.config import conf_dir; print(conf_dir())"],
                         env={**os.environ, "PYTHONPATH": str(target)}, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(target / "sweeps" / "conf")


def test_every_benchmark_imports_what_it_uses():
    """`make bench` is run by hand, rarely: a renamed function must fail here, not in the next bench run."""
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    code = "import sys; sys.path.insert(0, 'benchmarks'); " + "; ".join(f"import {p.stem}" for p in scripts)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert len(scripts) >= 8 and out.returncode == 0, out.stderr[-2000:]
