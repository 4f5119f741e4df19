"""`sweeps` as a Hydra plugin package: a good citizen of an environment shared with other Hydra apps.

Hydra imports every package under `hydra_plugins/` when any app starts, so installing `sweeps` must
change nothing for another app (its sweeper, launcher, outputs and exit codes are Hydra's own) and
cost it nothing that matters (no MLflow, TensorFlow, ... at the plugin scan). Our launcher passes
Hydra's own launcher test suites, as Hydra's plugin packages do in their tests.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite

HEAVY = ("mlflow", "tensorflow", "keras", "optuna", "pandas", "scipy", "matplotlib", "sklearn", "sweeps")

APP = '''
import sys
import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=None)
def main(cfg):
    hc = HydraConfig.get()
    print("JOB", hc.job.get("num", "-"), dict(cfg), hc.sweeper._target_, hc.launcher._target_, flush=True)
    if cfg.get("fail"):
        raise ValueError("this job fails")


main()
'''


def run_app(folder: Path, *args: str) -> subprocess.CompletedProcess:
    (folder / "app.py").write_text(APP)
    return subprocess.run([sys.executable, "app.py", *args], cwd=folder, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_another_hydra_app_keeps_hydras_own_sweeper_launcher_outputs_and_exit_codes(tmp_path):
    single = run_app(tmp_path, "+x=1")
    assert single.returncode == 0, single.stderr
    assert "JOB" in single.stdout and len(list((tmp_path / "outputs").glob("*/*/.hydra/config.yaml"))) == 1

    multi = run_app(tmp_path, "-m", "+x=1,2")
    assert multi.returncode == 0, multi.stderr
    lines = [line.split() for line in multi.stdout.splitlines() if line.startswith("JOB")]
    assert [line[1] for line in lines] == ["0", "1"], multi.stdout
    assert {line[-2] for line in lines} == {"hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}
    assert {line[-1] for line in lines} == {"hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
    (sweep_dir,) = (tmp_path / "multirun").glob("*/*")
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["0", "1", "multirun.yaml"]
    assert all((sweep_dir / n / ".hydra" / "overrides.yaml").is_file() for n in ("0", "1"))
    assert "Traceback" not in multi.stderr and "sweeps" not in multi.stderr

    failing = run_app(tmp_path, "-m", "+fail=true,false")  # Hydra's basic launcher: the batch runs, then exit 1
    assert failing.returncode == 1 and "this job fails" in failing.stderr
    assert [line.split()[1] for line in failing.stdout.splitlines() if line.startswith("JOB")] == ["0", "1"]


def _imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_hydras_plugin_scan_imports_nothing_heavy_and_registers_only_names_of_our_own():
    scan = ("from hydra.core.plugins import Plugins\nfrom hydra.plugins.sweeper import Sweeper\n"
            "Plugins.instance().discover(Sweeper)\nimport hydra_plugins.sweeps_plugins")
    assert _imported_after(scan) == [], "Hydra's plugin scan must not pull in our implementation"
    from hydra.core.config_store import ConfigStore

    import hydra_plugins.sweeps_plugins  # noqa: F401 - registers our options

    options = ConfigStore.instance().repo["hydra"]
    ours = {f"{group}/{name}" for group in ("sweeper", "launcher")
            for name, node in options[group].items() if node.provider == "sweeps"}
    assert ours == {"sweeper/grid.yaml", "sweeper/optuna.yaml", "launcher/packed.yaml"}, ours


@pytest.mark.slow
def test_help_imports_neither_mlflow_nor_tensorflow_and_plots_leave_the_backend_alone():
    for module in ("sweeps.compare", "sweeps.server"):  # sweeps.train: tests/test_cli.py
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0 and ("usage" in out.stdout or "powered by Hydra" in out.stdout), out.stderr[-500:]
        imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines()
                    if line.startswith("import time:")}
        assert not imported & {"mlflow", "tensorflow", "keras"}, (module, imported & {"mlflow", "tensorflow", "keras"})
    backend = ("import matplotlib\nmatplotlib.use('svg')\nimport sweeps.reporting.plots, sweeps.reporting.report\n"
               "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()")
    assert "matplotlib" in _imported_after(backend)


@pytest.fixture
def hydras_own_version_base():
    """Hydra's suites expect the version base of a fresh process (1.1: a job runs in its own folder);
    our in-process tests compose with version_base="1.3", which Hydra keeps process-wide."""
    from hydra import version
    from hydra.core.singleton import Singleton

    state = Singleton.get_state()
    version.setbase("1.1")
    yield
    Singleton.set_state(state)


# Hydra's own launcher suites against hydra/launcher=packed (an app that is not a `sweeps` app: its
# jobs simply run, one by one, as under the basic launcher). Every case of both suites applies.
@pytest.mark.slow
@pytest.mark.usefixtures("hydras_own_version_base")
@pytest.mark.parametrize("launcher_name, overrides", [("packed", [])])
class TestPackedLauncherSuite(LauncherTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({}, ["-m", "hydra/launcher=packed"]),
                                                           ({}, ["-m", "hydra/launcher=packed",
                                                                 "hydra.launcher.n_jobs=2"])])
class TestPackedLauncherIntegration(IntegrationTestSuite):
    pass
