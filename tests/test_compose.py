"""Compose the real configs (hydra.compose) and run them through the real runner."""

import json

import pytest
from app_runs import compose_config, run_config, with_values
from fake_datasets import write_cifar

from lrexp.engine.result import RangeTestResult
from lrexp.run.life import EXIT_OK


def test_default_config_is_the_offline_digits_run():
    cfg = compose_config()
    assert (cfg.net.name, cfg.dataset._target_, cfg.optimizer._target_) == \
        ("simple_cnn", "lrexp.app.data.digits", "torch.optim.SGD")
    assert cfg.loss._target_ == "torch.nn.CrossEntropyLoss"
    assert (cfg.min_lr, cfg.max_lr, cfg.num_iter, cfg.schedule) == (1e-7, 10.0, 100, "exp")
    assert cfg.hydra.job.name == "lrexp" and cfg.hydra.run.dir.startswith("outputs/")
    assert cfg.hydra.sweep.dir.startswith("outputs/multirun/")


def test_cifar100_vgg16_is_the_original_experiment():
    cfg = compose_config("experiment=cifar100_vgg16")
    assert (cfg.net.name, cfg.dataset._target_, cfg.batch_size) == \
        ("vgg16", "lrexp.app.data.cifar100", 64)
    assert (cfg.data.num_classes, cfg.data.in_channels, cfg.data.input_size) == (100, 3, 32)
    assert (cfg.min_lr, cfg.max_lr, cfg.num_iter, cfg.schedule) == (1e-7, 10.0, 100, "exp")
    assert cfg.optimizer._target_ == "torch.optim.SGD"


def test_cifar100_vgg16_runs_on_a_tiny_cifar100_on_disk(tmp_path, monkeypatch):
    write_cifar(tmp_path / "data", 100, monkeypatch, per_file=20)
    # the experiment's net, data and optimizer; a batch of 4, not 64: VGG16 is costly on a CPU
    cfg = compose_config("experiment=cifar100_vgg16", f"dataset.root={tmp_path / 'data'}",
                         "num_iter=2", "batch_size=4", "loader.num_workers=0",
                         out_dir=tmp_path / "run")
    assert run_config(cfg) == EXIT_OK
    curve = RangeTestResult.from_csv(tmp_path / "run" / "curve.csv")
    assert len(curve) == 2 and curve.extra["net"] == "vgg16"


def test_sine_mlp_runs_the_toy_regression(tmp_path):
    cfg = compose_config("experiment=sine_mlp", out_dir=tmp_path)
    assert (cfg.net.name, cfg.dataset._target_, list(cfg.net.hidden)) == \
        ("mlp", "lrexp.app.data.sine", [64, 64])
    assert cfg.loss._target_ == "torch.nn.MSELoss"  # the sine option picks the regression loss
    assert run_config(cfg) == EXIT_OK
    curve = RangeTestResult.from_csv(tmp_path / "curve.csv")
    assert curve.losses[0] > 0.1 and curve.min_loss < curve.losses[0]  # MSE fell from the start
    assert (tmp_path / "lr_vs_iteration.png").stat().st_size > 1000


def test_linear_epoch_trains_one_epoch_per_evenly_spaced_lr(tmp_path):
    # the experiment's schedule on its digits; an MLP's epochs cost a tenth of simple_cnn's
    cfg = compose_config("experiment=linear_epoch", "num_iter=3", "net=mlp", out_dir=tmp_path)
    assert (cfg.schedule, cfg.steps_per_lr, cfg.dataset._target_) == \
        ("linear", "epoch", "lrexp.app.data.digits")
    assert run_config(cfg) == EXIT_OK
    curve = RangeTestResult.from_csv(tmp_path / "curve.csv")
    assert curve.steps_per_lr == "epoch" and len(curve) == 3
    steps = curve.lrs[1:] - curve.lrs[:-1]
    assert steps == pytest.approx([steps[0]] * 2)


# Slow: in the fast loop test_configs builds every net option and test_models trains each one a
# step; here the whole app runs them, full size
@pytest.mark.slow
@pytest.mark.parametrize("net", ["mlp", "vgg11", "resnet18", "mobilenetv2", "tv"])
def test_nets_compose_and_run_three_steps(tmp_path, net):
    cfg = compose_config(f"net={net}", "num_iter=3", "batch_size=4", out_dir=tmp_path)
    assert run_config(cfg) == EXIT_OK
    curve = RangeTestResult.from_csv(tmp_path / "curve.csv")
    assert len(curve) == 3 and curve.extra["net"] == cfg.net.name


@pytest.mark.parametrize("override,needle", [
    ("min_lr=1,max_lr=0.1", "min_lr=1.0 and max_lr=0.1"),
    ("num_iter=1", "num_iter=1"),
    ("num_iter=1000000000000", "an integer from 2 to 10,000,000"),
    ("tracking.flush_every=-1", "tracking.flush_every=-1"),
    ("beta=1.0", "beta=1.0"),
    ("diverge_th=0.5", "diverge_th=0.5"),
    ("schedule=cosine", "schedule='cosine'"),
    ("steps_per_lr=0", "steps_per_lr=0"),
    ("threads=-1", "threads=-1"),
    ("device=tpu", "device=tpu"),
    ("max_lr=inf", "max_lr=inf"),
    ("amp=fp16,device=cpu", "amp=fp16 on cpu"),
    ("loader.num_workers=-1", "loader.num_workers=-1"),
    ("net=mlp,net.activation=foo", "net.activation=foo"),
    ("net=mlp,net.hidden=[abc]", "net.hidden=['abc']"),
])
def test_out_of_range_settings_exit_2_with_the_value(tmp_path, caplog, override, needle):
    # composed once per net choice; each value set on a copy as Hydra would have set it
    choices = [o for o in override.split(",") if o.startswith("net=")]
    values = [o for o in override.split(",") if not o.startswith("net=")]
    cfg = with_values(compose_config(*choices, out_dir=tmp_path), *values)
    assert run_config(cfg) == 2
    assert needle in caplog.text
    assert not (tmp_path / "curve.csv").exists()


def test_verify_in_the_app_records_every_probe_and_suggests_the_chosen_one(tmp_path, caplog):
    cfg = compose_config("experiment=sine_mlp", "num_iter=60", "verify=true", "verify_steps=8",
                         out_dir=tmp_path)
    with caplog.at_level("INFO"):
        assert run_config(cfg) == EXIT_OK
    summary = json.loads((tmp_path / "summary.json").read_text())
    verification = summary["verification"]
    assert summary["default_method"] == "verified"
    assert summary["suggested_lr"] == verification["chosen_lr"]
    assert summary["suggestions"]["verified"] == verification["chosen_lr"]
    chosen = min((p for p in verification["probes"] if p["loss"] is not None),
                 key=lambda p: p["loss"])
    assert chosen["lr"] == verification["chosen_lr"] and verification["steps_per_probe"] == 8
    curve = RangeTestResult.from_csv(tmp_path / "curve.csv")
    assert [p.lr for p in curve.verification.probes] == [p["lr"] for p in verification["probes"]]
    assert "verify: " in caplog.text and "x the range test's" in caplog.text
    assert " LR points on cpu in " in caplog.text and ", verify included (diverged)" in caplog.text


@pytest.mark.parametrize("num_iter", [2, pytest.param(4, marks=pytest.mark.slow)])
def test_a_too_short_curve_says_why_there_is_no_suggestion(tmp_path, caplog, num_iter):
    cfg = compose_config(f"num_iter={num_iter}", out_dir=tmp_path)
    assert run_config(cfg) == EXIT_OK
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["suggested_lr"] is None and summary["confidence"] == "none"
    assert "raise num_iter" in summary["confidence_reason"]
    assert "raise num_iter" in caplog.text


def test_a_sweep_preset_without_multirun_warns(tmp_path, caplog):
    cfg = compose_config("sweep=seeds", "num_iter=2", "net=mlp", out_dir=tmp_path)
    cfg.hydra.runtime.choices.sweep = "seeds"  # what Hydra records for sweep=seeds
    assert run_config(cfg) == EXIT_OK
    assert "sweep=seeds" in caplog.text and "-m" in caplog.text


def test_an_empty_image_folder_exits_2_naming_the_folder(tmp_path, caplog):
    (tmp_path / "images").mkdir()
    cfg = compose_config("dataset=imagefolder", f"dataset.root={tmp_path / 'images'}",
                         "loader.num_workers=0", out_dir=tmp_path / "run")
    assert run_config(cfg) == 2
    assert str((tmp_path / "images").resolve()) in caplog.text
    assert "Traceback" not in caplog.text
