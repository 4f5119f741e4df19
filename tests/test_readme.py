"""The README's snippets cannot drift: every command it shows composes, parses or names a real
target, and every Python block runs against a real (digits) sweep.

- `python -m sweeps.train ...`: each job the command would launch is composed and validated, the
  way the sweeper checks jobs before training (the first value of each grid axis; a search's
  ranges are checked by the search sweeper's own parser);
- `python -m sweeps.compare ...`: its arguments parse;
- `make <target>`: the Makefile has the target;
- ```python blocks: run as written (with `data=digits` where the README trains the default data)
  in a folder holding a real sweep's `mlruns/`.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from sweeps import compare
from sweeps.config import conf_dir, validate

ROOT = Path(__file__).resolve().parents[1]
# The README and the docs it sends readers to: a snippet is checked wherever it moves
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = "\n".join(path.read_text() for path in DOCUMENTS)


def commands(prefix: str) -> list[str]:
    """Lines of the README's indented code blocks that start with `prefix` (continuations joined)."""
    out, lines = [], README.splitlines()
    for i, line in enumerate(lines):
        if not (line.startswith(f"    {prefix.rstrip()} ") or line == f"    {prefix.rstrip()}"):  # a word, not a prefix of one
            continue
        text = line.strip()
        while text.endswith("\\"):
            i += 1
            text = text[:-1] + " " + lines[i].strip()
        out.append(text)
    return out


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def words(command: str) -> list[str]:
    """The command's words, without its trailing comment and shell redirection; `~` after `key=`
    expanded as bash expands it, and the placeholder `<head>` (a Ray head node) as this machine."""
    parts = [re.sub(r"=~/", "=" + str(Path.home()) + "/", w).replace("<head>", "127.0.0.1")
             for w in shlex.split(command, comments=True)]
    return parts[:parts.index(">")] if ">" in parts else parts


def first_job(overrides: list[str]) -> list[str]:
    """The overrides of the first job a grid would launch; search ranges left to the search sweeper."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    out = []
    for override in parsed:
        if not override.is_sweep_override():
            out.append(override.input_line)
            continue
        try:
            value = next(iter(override.sweep_string_iterator()))
        except Exception:  # interval(...): a search range, not a grid axis
            continue
        out.append(f"{override.get_key_element()}={value}")
    return out


TRAIN = commands("python -m sweeps.train")


def test_the_readme_shows_commands_of_every_kind():
    assert len(TRAIN) >= 8 and commands("python -m sweeps.compare") and commands("make ")


def _id(command: str) -> str:
    return " ".join(words(command)[1:])


@pytest.fixture
def users_folder(tmp_path, monkeypatch):
    """Where a user runs the commands that name their own work: `my_pkg` importable, `lab.csv` there."""
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text("def build(spec):\n    raise NotImplementedError\n")
    (tmp_path / "lab.csv").write_text("dose,outcome\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    (tmp_path / "my_pkg" / "models.py").write_text("def build(spec, width=64):\n    raise NotImplementedError\n")
    (tmp_path / "my_conf" / "model").mkdir(parents=True)  # docs/your_work.md's model file of your own
    (tmp_path / "my_conf" / "model" / "my_net.yaml").write_text("name: my_net\n_target_: my_pkg.models.build\n"
                                                              "kwargs: {width: 64}\n")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "scans.npz", x=rng.normal(size=(20, 8, 8, 1)), y=np.arange(20) % 2)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", TRAIN, ids=_id)
def test_every_training_command_composes_and_validates(command, users_folder):
    args = [w for w in words(command)[3:] if w != "-m"]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=first_job(args), return_hydra_config=True)  # launcher and sweeper too
    validate(cfg)
    search = [w for w in args if w.startswith("hydra/sweeper=optuna")]
    if search:
        from sweeps.sweeping.search import parse_space

        ranges = [w for w in args if "(" in w]
        space, _ = parse_space(ranges)
        assert set(space) == {w.split("=")[0] for w in ranges} != set(), command


@pytest.mark.parametrize("command", commands("python -m sweeps.compare"), ids=_id)
def test_every_compare_command_parses(command):
    args = [w.replace("<id>", "3f2a") for w in words(command)[3:]]
    compare.parse_args(args)


@pytest.mark.parametrize("target", sorted({words(c)[1] for c in commands("make ") if len(words(c)) > 1}))
def test_every_make_target_exists(target):
    assert re.search(rf"^{re.escape(target)}:", (ROOT / "Makefile").read_text(), flags=re.M), target


@pytest.mark.slow
def test_the_python_blocks_run_as_written_on_a_real_sweep(seed_sweep):
    """In the folder of the session's sweep (tests/conftest.py: `python -m sweeps.train -m reg=l1,l2
    seed=0,1 data=digits ...` run there with only PATH and HOME set, so into mlruns/mlflow.db)."""
    blocks = python_blocks()
    assert blocks, "the README shows Python"
    tmp_path, env = seed_sweep["folder"], seed_sweep["env"]
    for block in blocks:
        run = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, f"{block}\n{run.stderr[-3000:]}"
    assert {p.name for p in tmp_path.iterdir()} <= {"mlruns", "multirun", "reports", ".keras", ".cache", ".config",
                                                    ".matplotlib", "outputs"}, "nothing stray (no mlflow.db here)"
