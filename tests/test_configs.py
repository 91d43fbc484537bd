"""Every option of every config group composes from the checkout's conf/, and what it names
builds where that is cheap and offline. Options are found on disk: a new yaml is covered
without touching this file."""

from functools import cache
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from lrexp.app import data
from lrexp.app.schema import LrexpConfig, check, register
from lrexp.sweep.launchers import missing_launcher_extra

CONF = Path(__file__).resolve().parents[1] / "conf"
register()


def options_on_disk(conf: Path) -> list[str]:
    """'group=option' for every yaml below conf but the primary config."""
    return sorted(f"{path.parent.relative_to(conf).as_posix()}={path.stem}"
                  for path in conf.rglob("*.yaml")
                  if path.parent != conf)


OPTIONS = options_on_disk(CONF)
# a launcher whose extra is not installed cannot compose: its options are skipped, said why
HERE = [option for option in OPTIONS if missing_launcher_extra([option]) is None]


def with_extras(options: list[str]) -> list:
    return [option if option in HERE else pytest.param(option, marks=pytest.mark.skip(
        reason=f"needs the [{missing_launcher_extra([option])}] extra")) for option in options]


def of_group(group: str) -> list[str]:
    return [option for option in OPTIONS if option.split("=")[0] == group]


@cache
def composed() -> dict[str, DictConfig]:
    """Each option composed once, with Hydra's own node (the launcher and sweeps live there).
    An option the primary config already chooses is the default composition (a compose costs
    about 0.2 s here)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        default = compose("config", return_hydra_config=True)
        chosen = {f"{group}={name}" for group, name in default.hydra.runtime.choices.items()}
        return {option: default if option in chosen else
                compose("config", overrides=[option], return_hydra_config=True)
                for option in HERE}


def targets(node: dict, path: str = ""):
    """(path, target) of every node below ``node`` (a plain dict) that names a ``_target_``."""
    if "_target_" in node:
        yield path, node["_target_"]
    for key, value in node.items():
        if isinstance(value, dict):
            yield from targets(value, f"{path}.{key}".lstrip("."))


def test_every_group_the_app_reads_has_options():
    groups = {option.split("=")[0] for option in OPTIONS}
    assert {"net", "dataset", "loss", "optimizer", "tracking", "experiment", "sweep",
            "hydra/launcher"} <= groups


@pytest.mark.parametrize("option", with_extras(OPTIONS))
def test_option_composes_and_passes_the_checks(option):
    cfg = composed()[option]
    group, name = option.split("=")
    assert cfg.hydra.runtime.choices[group] == name
    check(cfg)  # the schema's ranges hold for every shipped option


@pytest.mark.parametrize("option", with_extras(OPTIONS))
def test_every_target_an_option_names_imports(option):
    named = list(targets(OmegaConf.to_container(composed()[option], resolve=False)))
    assert named  # at least net, dataset, optimizer and Hydra's callbacks
    for path, target in named:
        assert callable(get_object(target)), f"{option}: {path}._target_"


@pytest.mark.parametrize("option", of_group("optimizer"))
def test_optimizer_builds_with_every_setting_it_names(option):
    node = composed()[option].optimizer
    optimizer = instantiate(node)([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    assert isinstance(optimizer, torch.optim.Optimizer)
    settings = {key: node[key] for key in node if not key.startswith("_")}
    assert settings == {key: optimizer.defaults[key] for key in settings}


@pytest.mark.parametrize("option", of_group("net") + of_group("experiment"))
def test_net_builds_from_its_node_alone_and_its_head_has_the_data_classes(option):
    cfg = composed()[option]
    if str(cfg.net._target_).endswith("timm_net"):
        pytest.importorskip("timm")
    # nothing is added to the node: its shapes are interpolations of data.*; zoo_net refuses
    # a setting the net does not take (it would do nothing); forward passes are test_models'
    net = instantiate(cfg.net)
    head = [module for module in net.modules() if isinstance(module, torch.nn.Linear)][-1]
    assert head.out_features == cfg.data.num_classes


OFFLINE_DATASETS = {"digits", "sine", "synthetic"}


@pytest.mark.parametrize("option", of_group("dataset") + of_group("experiment"))
def test_dataset_builds_offline_or_says_where_it_looked(option, tmp_path):
    node = composed()[option].dataset
    if node._target_.rsplit(".", 1)[-1] in OFFLINE_DATASETS:
        train, _ = data.loaders(instantiate(node), data.LoaderSettings(batch_size=8))
        inputs, labels = next(iter(train))
        assert len(inputs) == len(labels) == 8
        return
    # a dataset on disk: its function binds every setting before it looks for the files (a
    # setting it does not take would raise a TypeError instead)
    with pytest.raises(InstantiationException) as caught:
        instantiate(node, root=str(tmp_path / "nowhere"))
    assert isinstance(caught.value.__cause__, data.DatasetNotFoundError)
    assert "dataset.root=" in str(caught.value.__cause__)


@pytest.mark.parametrize("option", of_group("dataset"))
def test_every_dataset_option_states_the_shapes_the_zoo_nets_read(option, tmp_path):
    cfg = composed()[option]
    if option == "dataset=imagefolder":  # one class per sub-folder of dataset.root
        for name in ("cat", "dog", "owl"):
            (tmp_path / name).mkdir()
        cfg = OmegaConf.merge(cfg, {"dataset": {"root": str(tmp_path)}})
    facts = [cfg.data.num_classes, cfg.data.in_channels, cfg.data.input_size]
    assert all(isinstance(value, int) and value >= 1 for value in facts), facts
    assert option != "dataset=imagefolder" or cfg.data.num_classes == 3


@pytest.mark.parametrize("option", of_group("sweep"))
def test_sweep_preset_sweeps_options_and_keys_that_exist(option):
    cfg = composed()[option]
    groups = {other.split("=")[0] for other in OPTIONS}
    for key, values in cfg.hydra.sweeper.params.items():
        if key in groups:
            missing = [value for value in str(values).split(",")
                       if f"{key}={value.strip()}" not in OPTIONS]
            assert not missing, f"{option} sweeps {key} over options not on disk: {missing}"
        else:
            assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", \
                f"{option} sweeps {key}, which the config does not have"


def test_help_explains_exactly_the_settings_of_the_schema():
    settings = composed()["hydra/help=lrexp"].hydra.help.settings
    explained = {name.strip() for line in settings.splitlines()
                 for name in line.split("  ")[0].split(",")}
    groups = {"net", "dataset", "loss", "optimizer", "tracking"}
    assert explained == set(LrexpConfig.__dataclass_fields__) - groups


def test_config_yaml_repeats_no_schema_default():
    primary = OmegaConf.load(CONF / "config.yaml")
    assert set(primary) == {"defaults"}  # the schema (LrexpConfig) holds every default
