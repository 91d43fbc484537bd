"""A new user's way to a sweep's curves in the MLflow UI: scripts/ui_snapshot.py starts a real
``mlflow ui`` and headless Chromium with a fresh profile and clicks, with the mouse, from the
landing page to the sweep parent's overlay (every child's loss against LR in one chart), which
the sweep shows in its experiment's description and its parent run's."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lrexp.sweep.callbacks import experiment_note, parent_description
from lrexp.sweep.recorder import LATEST_SWEEP_NOTE, NOTE_TAG, SweepRecorder

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ui_snapshot.py"
ROWS = [{"status": "diverged"}, {"status": "diverged"}, {"status": "FAILED"}]


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="needs chromium (apt-get install chromium)")
def test_three_clicks_from_the_landing_page_show_every_childs_curve_in_one_chart(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path),
                           "--num-iter", "12", "--nets", "mlp,simple_cnn"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    path = json.loads((tmp_path / "path.json").read_text())
    assert [step["click"] for step in path["steps"]] == ["Model training", "lrexp", "description"]
    assert all(step["clicked"] and step["shows"] for step in path["steps"]), path["steps"]
    assert "workflowType=machine_learning" in path["steps"][1]["url"]  # the training view
    # the overlay the sweep logged on its parent run, decoded by the browser, drawn at its
    # own size and in sight (not clipped by a collapsed description)
    [(src, width, height, drawn_width, drawn_height, in_sight)] = path["overlay_shown"]
    assert f"run_uuid={path['parent_run_id']}" in src
    assert (drawn_width, drawn_height) == (width, height) == (800, 500) and in_sight
    [link] = path["link_logged"]  # the sweep's INFO line, the parent's page in it
    assert f"http://127.0.0.1:5000/#/experiments/1/runs/{path['parent_run_id']} (after " \
           "`mlflow ui --backend-store-uri sqlite:///" in link
    for step in ["0_landing", *(Path(s["screenshot"]).stem for s in path["steps"])]:
        assert (tmp_path / f"{step}.png").read_bytes()[:4] == b"\x89PNG"


def test_the_parents_description_embeds_its_overlay_by_a_relative_url():
    text = parent_description("abc123", ROWS, Path("/sweep/sweep_overlay.png"),
                              Path("/sweep/sweep_summary.csv"))
    assert text.startswith("![every job's loss against LR]"
                           "(get-artifact?path=sweep_overlay.png&run_uuid=abc123)")
    assert "3 jobs (2 diverged, 1 FAILED)" in text and "`sweep_summary.csv`" in text


def test_without_an_overlay_neither_description_shows_an_image():
    table = Path("/sweep/sweep_summary.csv")
    assert "get-artifact" not in parent_description("abc123", ROWS, None, table)
    assert experiment_note("abc123", "sweep 10-00-23", ROWS, None, table) == ""


def test_the_experiments_note_names_the_latest_sweep_and_links_its_run():
    note = experiment_note("abc123", "sweep 10-00-23", ROWS, Path("/s/sweep_overlay.png"),
                           Path("/s/sweep_summary.csv"))
    first_line = note.splitlines()[0]  # what the collapsed description shows
    assert first_line.startswith("**Latest sweep**: [sweep 10-00-23](#/runs/abc123)")
    assert "get-artifact?path=sweep_overlay.png&run_uuid=abc123" in note


@pytest.fixture
def store(default_store):
    return f"sqlite:///{default_store}"


def close_a_sweep(store: str, experiment: str, tmp_path: Path,
                  note: str = "experiment text") -> tuple[str, str]:
    table = tmp_path / "sweep_summary.csv"
    table.write_text("job,status\n0_mlp,diverged\n")
    recorder = SweepRecorder(store, experiment=experiment)
    run_id = recorder.open("sweep 10-00-23", {"lrexp.sweep": "true"})
    assert run_id is not None
    page = recorder.close(run_id, rows=[{"job": "0_mlp", "status": "diverged"}],
                          files=[table], status="FINISHED", description="parent text",
                          experiment_note=note)
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient(store).get_experiment_by_name(experiment).experiment_id
    assert page == (f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id} "
                    f"(after `mlflow ui --backend-store-uri {store}`)")
    return experiment_id, run_id


def test_a_closed_sweep_describes_its_parent_and_its_experiment(store, tmp_path):
    from mlflow.tracking import MlflowClient

    experiment_id, run_id = close_a_sweep(store, "notes", tmp_path)
    client = MlflowClient(store)
    assert client.get_run(run_id).data.tags[NOTE_TAG] == "parent text"
    note = client.get_experiment(experiment_id).tags[NOTE_TAG]
    assert note == f"{LATEST_SWEEP_NOTE}\nexperiment text"
    close_a_sweep(store, "notes", tmp_path, note="the next sweep")  # replaces lrexp's own
    assert client.get_experiment(experiment_id).tags[NOTE_TAG] == \
        f"{LATEST_SWEEP_NOTE}\nthe next sweep"


def test_a_users_own_experiment_description_is_kept(store, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    experiment_id = client.create_experiment("mine", tags={NOTE_TAG: "my notes"})
    close_a_sweep(store, "mine", tmp_path)
    assert client.get_experiment(experiment_id).tags[NOTE_TAG] == "my notes"
