"""A sweep over seeds is read like repeats: the jobs that differ only in their seed give one
median curve, its band and the spread of their suggestions (lrexp.sweep.seed_groups)."""

import csv
import json
import logging

import numpy as np
import pytest
from app_runs import lrexp_main
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from sweep_checks import runs_of

from lrexp.engine.result import RangeTestResult
from lrexp.run.life import ENDED_ON_ITS_OWN
from lrexp.run.summary import RunSummary
from lrexp.run.sweep_dir import collect_jobs, seeds_vary
from lrexp.sweep.seed_groups import GROUP_SUMMARY, seed_groups, write_group

GRID = np.geomspace(1e-4, 1.0, 12)


def _curve(level: float, length: int = 12) -> RangeTestResult:
    """A bowl whose bottom sits at ``level``, cut at ``length`` points."""
    losses = level + (np.log10(GRID) + 2) ** 2 / 4
    return RangeTestResult(GRID[:length], losses[:length], losses[:length])


def _job(sweep_dir, name, overrides, curve, status="completed"):
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    curve.to_csv(job / "curve.csv")
    summary = RunSummary.of_result(curve, {"net": name.split("_")[1]}, seconds=1.0,
                                   device="cpu")
    summary.status = status
    summary.write(job / "summary.json")


def _groups(sweep_dir):
    """The seed groups of the jobs in ``sweep_dir``, read as the sweep's end reads them."""
    jobs = collect_jobs(sweep_dir)
    return seed_groups(jobs.overrides, jobs.rows, jobs.curves, sweep_dir, ENDED_ON_ITS_OWN)


def test_jobs_that_differ_only_in_their_seed_form_one_group_per_other_setting(tmp_path):
    levels = {"mlp": [1.0, 1.2, 0.9], "cnn": [0.5, 0.7, 0.6]}
    for n, (net, net_levels) in enumerate(levels.items()):
        for seed, level in enumerate(net_levels):
            _job(tmp_path, f"{3 * n + seed}_{net}", [f"net={net}", f"seed={seed}"], _curve(level))
    mlp, cnn = _groups(tmp_path)
    assert (mlp.name, mlp.setting, mlp.seeds) == ("seeds_net_mlp", "net=mlp", ["0", "1", "2"])
    assert cnn.jobs == ["3_cnn", "4_cnn", "5_cnn"]
    # the median of the three bowls is the bowl of the median level
    np.testing.assert_allclose(mlp.result.losses, _curve(1.0).losses)
    np.testing.assert_allclose(cnn.result.losses, _curve(0.6).losses)
    assert mlp.summary.repeats == 3 and mlp.summary.suggested_lr == mlp.result.suggest().lr


def test_several_groups_reach_the_parent_under_their_own_names(tmp_path, shared_sqlite_uri,
                                                              experiment_name):
    from lrexp.sweep.recorder import SweepRecorder

    for n, (net, level) in enumerate([("mlp", 1.0), ("cnn", 0.5)]):
        for seed in (0, 1):
            _job(tmp_path, f"{2 * n + seed}_{net}", [f"net={net}", f"++seed={seed}"],
                 _curve(level + seed / 10))
    groups = [write_group(group, tmp_path) for group in _groups(tmp_path)]
    assert [group.name for group in groups] == ["seeds_net_mlp", "seeds_net_cnn"]
    recorder = SweepRecorder(uri=shared_sqlite_uri, experiment=experiment_name)
    parent = recorder.open("sweep", tags={})
    for group in groups:
        recorder.log_seed_group(parent, group, prefixed=True)
    client = MlflowClient(shared_sqlite_uri)
    run = client.get_run(parent)
    for group in groups:
        history = client.get_metric_history(parent, f"{group.name}/loss")
        np.testing.assert_allclose([m.value for m in sorted(history, key=lambda m: m.step)],
                                   group.result.losses)
        assert run.data.metrics[f"{group.name}/suggested_lr"] == group.summary.suggested_lr
        assert run.data.tags[f"{group.name}/seeds"].endswith(f"seed 1 ({group.jobs[1]})")
    # each seed's curve keeps its job and seed in the group's file, and its plot says seeds
    read_back = RangeTestResult.from_csv(tmp_path / "seeds_net_cnn" / "curve.csv")
    assert [r.extra for r in read_back.repeats] == [{"job": "2_cnn", "seed": "0"},
                                                     {"job": "3_cnn", "seed": "1"}]
    from lrexp.plotting import plot

    labels = [line.get_label() for line in plot(read_back).axes[0].lines]
    assert "each of 2 seeds (smoothed)" in labels


def test_a_sweep_without_override_records_still_knows_its_seeds_varied(tmp_path):
    for name, seed in [("0_mlp", 0), ("1_mlp", 1)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(f"seed: {seed}\nnet:\n  name: mlp\n")
    assert seeds_vary({"0_mlp": [], "1_mlp": []}, tmp_path)  # hydra.output_subdir=null
    assert not seeds_vary({"0_mlp": ["net=mlp"], "1_mlp": ["net=cnn"]}, tmp_path)


def test_a_long_setting_gives_a_short_distinct_name(tmp_path):
    long = "dataset.root=/a/very/long/path/to/some/images/folder/that/goes/on"
    for n in (0, 1):
        for seed in (0, 1):
            _job(tmp_path, f"{2 * n + seed}_mlp", [f"{long}{n}", f"seed={seed}"], _curve(1.0))
    names = [group.name for group in _groups(tmp_path)]
    assert len(set(names)) == 2 and all(len(name) <= len("seeds_") + 40 for name in names)


def test_a_failed_job_a_lone_seed_and_a_different_grid_are_left_out(tmp_path, caplog):
    _job(tmp_path, "0_mlp", ["net=mlp", "seed=0"], _curve(1.0))
    _job(tmp_path, "1_mlp", ["net=mlp", "seed=1"], _curve(1.1))
    _job(tmp_path, "2_mlp", ["net=mlp", "seed=2"], _curve(0.2), status="FAILED")
    _job(tmp_path, "3_cnn", ["net=cnn", "seed=0"], _curve(0.5))  # the only cnn
    _job(tmp_path, "4_vgg", ["net=vgg", "seed=0"], _curve(0.5))
    _job(tmp_path, "5_vgg", ["net=vgg", "seed=1"],  # another LR grid
         RangeTestResult(GRID * 2, _curve(0.5).losses, _curve(0.5).losses))
    with caplog.at_level(logging.WARNING):
        [group] = _groups(tmp_path)
    assert group.jobs == ["0_mlp", "1_mlp"] and group.setting == "net=mlp"
    assert "The seeds of net=vgg are not read together" in caplog.text


def test_a_seeds_sweep_gives_one_median_curve_its_spread_and_a_parent_that_carries_them(
        tmp_path, shared_sqlite_uri, experiment_name):
    finished = lrexp_main("-m", "sweep=seeds", "seed=0,1,2", "net=mlp", "num_iter=30",
                          "batch_size=16", f"tracking.uri={shared_sqlite_uri}",
                          f"tracking.experiment={experiment_name}")
    assert finished.returncode == 0, finished.output
    [sweep_dir] = tmp_path.glob("outputs/multirun/*/*")
    jobs = sorted(path.parent for path in sweep_dir.glob("*_mlp/curve.csv"))
    curves = [RangeTestResult.from_csv(job / "curve.csv") for job in jobs]
    suggested = [json.loads((job / "summary.json").read_text())["suggested_lr"] for job in jobs]

    # oracle: at each point, the median over the seeds that reached it, as far as 2 of 3 did
    length = sorted((len(c) for c in curves), reverse=True)[1]
    reached = [[np.nan_to_num(c.losses[j], nan=np.inf) for c in curves if j < len(c)]
               for j in range(length)]
    median = RangeTestResult.from_csv(sweep_dir / "seeds" / "curve.csv")
    assert len(median.repeats) == 3
    np.testing.assert_allclose(median.losses, [np.median(values) for values in reached])
    q25, q75 = np.percentile(np.log10(suggested), [25, 75])
    summary = RunSummary.read(sweep_dir / "seeds" / GROUP_SUMMARY)
    assert summary.suggested_lr_iqr_decades == pytest.approx(q75 - q25)
    assert f"Seeds 0, 1, 2: the median curve gives suggested LR {summary.suggested_lr:.3g}" \
        in finished.output
    assert "Lowest minimum loss" not in finished.output  # one seed's minimum is luck
    with open(sweep_dir / "sweep_summary.csv") as table:
        assert len(list(csv.DictReader(table))) == 3  # the jobs; the group has its own folder

    client = MlflowClient(shared_sqlite_uri)
    [parent] = [r for r in runs_of(client, experiment_name)
                if "mlflow.parentRunId" not in r.data.tags]
    history = sorted(client.get_metric_history(parent.info.run_id, "loss"), key=lambda m: m.step)
    np.testing.assert_allclose([m.value for m in history], median.losses)
    assert parent.data.metrics["suggested_lr"] == pytest.approx(summary.suggested_lr)
    assert parent.data.metrics["suggested_lr_iqr_decades"] == pytest.approx(q75 - q25)
    for index, curve in enumerate(curves):
        seed_history = client.get_metric_history(parent.info.run_id, f"loss_repeat_{index}")
        np.testing.assert_array_equal([m.value for m in sorted(seed_history, key=lambda m: m.step)],
                                      curve.losses)
    assert parent.data.tags["seeds"].startswith("loss_repeat_0: seed 0 (0_mlp)")
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id, "seeds")}
    assert {"seeds/plot.png", "seeds/curve.csv", "seeds/curve_repeats.csv",
            f"seeds/{GROUP_SUMMARY}"} <= artifacts


def test_the_sweep_table_shows_the_repeats_spread_only_when_a_job_has_repeats():
    from lrexp.run.summary import format_table

    single = RunSummary.of_result(_curve(1.0), {"net": "mlp"}, seconds=1.0, device="cpu")
    repeated = RunSummary.of_result(RangeTestResult.of_repeats(
        [_curve(1.0), _curve(1.2, length=10), _curve(0.8)]), {"net": "cnn"}, seconds=1.0,
        device="cpu")
    assert "suggested_lr_iqr_decades" not in format_table([single.row("0_mlp")])
    header, first, second = format_table([single.row("0_mlp"), repeated.row("1_cnn")]).splitlines()
    column = header.index("suggested_lr_iqr_decades")
    assert second[header.index("repeats"):].split()[0] == "3"
    assert second[column:].split()[0] == f"{repeated.suggested_lr_iqr_decades:.3g}"
    assert first[column:].split()[0] == "—"
