"""The typed schema: typos fail at compose time naming the key; out-of-range values fail in validate()."""

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from sweeps.config import DatasetName, OptimizerName, RegKind, config_hash, validate
from sweeps.errors import ConfigError


def test_defaults_compose_to_the_documented_job(make_cfg):
    cfg = make_cfg(fast=False)
    assert cfg.data.name == DatasetName.fashion_mnist
    assert list(cfg.model.hidden) == [512, 512]
    assert cfg.reg.kind == RegKind.none and cfg.optimizer.name == OptimizerName.rmsprop
    assert cfg.data.val_split == 0.1 and cfg.early_stopping.enabled is False
    validate(cfg)


def test_group_options_set_their_values(make_cfg):
    cfg = make_cfg("reg=l1_l2", "optimizer=sgd", "model=mlp_400_300", "data=circles", "rate=1e-3", fast=False)
    assert cfg.reg.kind == RegKind.l1_l2 and cfg.rate == 1e-3
    assert cfg.optimizer.name == OptimizerName.sgd and cfg.optimizer.lr == 0.01
    assert list(cfg.model.hidden) == [400, 300]
    assert cfg.data.name == DatasetName.circles and cfg.data.test_split == 0.5


@pytest.mark.parametrize("override, key", [("rat=1e-3", "rat"), ("data.scalee=none", "scalee"),
                                           ("model.hiden=[3]", "hiden")])
def test_unknown_key_fails_at_compose_naming_it(make_cfg, override, key):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        make_cfg(override)
    assert key in str(err.value) or key in str(err.value.__cause__)


@pytest.mark.parametrize("override", ["rate=abc", "epochs=1.5x", "reg.kind=l3", "data.scale=divide256"])
def test_wrong_type_or_choice_fails_at_compose(make_cfg, override):
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        make_cfg(override)
    text = f"{err.value} {err.value.__cause__}"
    assert override.split("=")[0].split(".")[-1] in text


def test_unknown_group_option_lists_the_available_ones(make_cfg):
    with pytest.raises(ConfigCompositionException) as err:
        make_cfg("reg=l3")
    assert "l3" in str(err.value) and "l1_l2" in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("rate=-0.1", "rate"), ("dropout=1.0", "dropout"), ("dropout=-0.2", "dropout"),
    ("batch_size=0", "batch_size"), ("epochs=0", "epochs"), ("optimizer.lr=0", "optimizer.lr"),
    ("data.val_split=1.0", "data.val_split"), ("reg.layers=[5]", "reg.layers"),
    ("dropout_layers=[2]", "dropout_layers"), ("cv.folds=1", "cv.folds"),
    ("optimized_metric=val_acc", "optimized_metric"), ("rate=1e400", "rate"), ("optimizer.lr=inf", "optimizer.lr"),
])
def test_validate_names_the_key_and_the_fix(make_cfg, override, key):
    cfg = make_cfg(override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert message.startswith(f"{key}=") and ("use" in message or "must" in message)
    assert "\n" not in message


def test_config_hash_tracks_what_changes_results(make_cfg, tmp_path):
    base = config_hash(make_cfg("reg=l2", "rate=1e-4"))
    assert base == config_hash(make_cfg("reg=l2", "rate=1e-4"))
    assert base != config_hash(make_cfg("reg=l2", "rate=1e-3"))
    assert base == config_hash(make_cfg("reg=l2", "rate=1e-4", f"tracking.uri=sqlite:///{tmp_path}/other.db"))
    # without a penalty the rate changes nothing: hashed as 0 (so an old reg=none run keeps its hash)
    assert config_hash(make_cfg("reg=none", "rate=1e-3")) == config_hash(make_cfg("reg=none")) != base


def test_a_penalty_has_a_rate_by_default_and_a_rate_of_0_is_refused(make_cfg):
    assert make_cfg("reg=l1").rate == 1e-4 and make_cfg("reg=l1", "rate=1e-3").rate == 1e-3
    assert make_cfg().rate == 0.0 and make_cfg("reg=none").reg.kind.value == "none"
    with pytest.raises(ConfigError) as err:
        validate(make_cfg("reg=l1_l2", "rate=0"))
    assert str(err.value) == "reg=l1_l2 needs rate > 0, e.g. rate=1e-4 (reg=none trains without a penalty)"


def test_the_activation_list_is_keras_own():
    import keras

    from sweeps.config import ACTIVATIONS

    public = {k for k in dir(keras.activations) if not k.startswith("_")} - {"get", "serialize", "deserialize"}
    assert set(ACTIVATIONS) == public


def test_a_sweep_composes_each_jobs_config_once_and_hands_out_copies():
    """The sweeper checks every job's config and the launcher composes it again: once is enough."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from sweeps.config import conf_dir
    from sweeps.sweeping.grid import ComposedOnce

    class Counting:  # Hydra's real loader, counting its compositions
        def __init__(self, loader):
            self.loader, self.calls = loader, 0

        def load_sweep_config(self, master_config, sweep_overrides):
            self.calls += 1
            return self.loader.load_sweep_config(master_config, sweep_overrides)

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        real = Counting(GlobalHydra.instance().config_loader())
        master = real.loader.load_configuration("config", [], RunMode.MULTIRUN)
        loader = ComposedOnce(real)
        first = loader.load_sweep_config(master, ["reg=l1", "rate=1e-3"])
        with open_dict(first):
            first.hydra.job.num = 7  # what a launcher does to its copy
        again = loader.load_sweep_config(master_config=master, sweep_overrides=["reg=l1", "rate=1e-3"])
        other = loader.load_sweep_config(master, ["reg=l2", "rate=1e-3"])
    assert real.calls == 2, "the second request for the same job is not composed again"
    assert again.reg.kind == RegKind.l1 and again.rate == 1e-3 and other.reg.kind == RegKind.l2
    assert OmegaConf.is_missing(again.hydra.job, "num"), "each caller gets its own copy"
    # Pickled as a pool worker receives it, in a process of its own: Hydra's test suites (test_hydra_plugins)
    # scan the plugins again, which leaves this process' config-source classes stale for pickle.
    probe = ("import pickle\nfrom hydra import initialize_config_dir\nfrom hydra.core.global_hydra import GlobalHydra\n"
             "from hydra.types import RunMode\nfrom sweeps.config import conf_dir, register_configs\n"
             "from sweeps.sweeping.grid import ComposedOnce\nregister_configs()\n"
             "with initialize_config_dir(str(conf_dir()), version_base='1.3'):\n"
             "    loader = ComposedOnce(GlobalHydra.instance().config_loader())\n"
             "    master = loader.load_configuration('config', [], RunMode.MULTIRUN)\n"
             "    loader.load_sweep_config(master, ['reg=l1', 'rate=1e-3'])\n"
             "    print(len(loader.composed), len(pickle.loads(pickle.dumps(loader)).composed))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["1", "0"], ("a worker composes its own", out.stderr[-2000:])


def test_every_dataset_has_its_facts_and_a_config_file():
    """A dataset is a `DatasetName`, a row of `config.DATASETS`, a reader in `data._read_raw` and
    conf/data/<name>.yaml: one missing is caught here, not by a user's job."""
    from sweeps.config import DATASETS, DatasetName, conf_dir

    assert set(DATASETS) == set(DatasetName)
    assert {p.stem for p in (conf_dir() / "data").glob("*.yaml")} >= {n.value for n in DatasetName}
