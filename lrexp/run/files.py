"""A run dir's format, written once: the names of its files and a sweep dir's own. The curve
files' columns are the engine's (``lrexp.engine.curve_file``: ``RangeTestResult.to_csv`` writes
them, ``from_csv`` reads them, strictly for a file from anywhere); ``summary.json``'s schema is
``lrexp.run.summary.RunSummary``."""

from __future__ import annotations

from lrexp.engine.curve_file import CURVE_COLUMNS, META_PREFIX, REPEAT_COLUMNS

__all__ = ["ARTIFACT_SUFFIXES", "CONFIG_FILE", "CURVE_COLUMNS", "CURVE_FILE", "HYDRA_DIR",
           "INTERRUPTED_FILE", "LOG_SUFFIX", "META_PREFIX", "PARENT_CLOSED_FILE",
           "PARENT_RUN_FILE", "PLOT_FILE", "REPEATS_FILE", "REPEAT_COLUMNS", "SCHEDULE_PLOT_FILE",
           "SUMMARY_FILE", "SWEEP_OVERLAY_FILE", "SWEEP_SUMMARY_FILE", "SWEPT_KEYS_FILE"]

# -- a run dir (Hydra's run dir, or a sweep job's) ------------------------------------------------
CONFIG_FILE = "config.yaml"  # written first: even a run killed outright says what it ran with
CURVE_FILE = "curve.csv"  # appended step by step while the test runs, replaced when it ends
REPEATS_FILE = "curve_repeats.csv"  # each repeat's curve (RangeTestResult.repeats_path)
SUMMARY_FILE = "summary.json"
PLOT_FILE, SCHEDULE_PLOT_FILE = "plot.png", "lr_vs_iteration.png"
HYDRA_DIR = ".hydra"  # Hydra's record of the config and overrides
ARTIFACT_SUFFIXES = (".png", ".csv", ".yaml", ".json")  # top-level files sent as artifacts
LOG_SUFFIX = ".log"  # the job's log, which Hydra writes beside them

# -- a sweep dir ----------------------------------------------------------------------------------
PARENT_RUN_FILE = "mlflow_parent_run_id"  # the parent MLflow run every job finds there
PARENT_CLOSED_FILE = "mlflow_parent_closed"  # how the parent run was closed, once it was
SWEPT_KEYS_FILE = "swept_keys.json"  # the keys the sweep varies, which name its jobs' runs
INTERRUPTED_FILE = "INTERRUPTED"  # left by an interrupted job: the jobs not started skip
SWEEP_SUMMARY_FILE, SWEEP_OVERLAY_FILE = "sweep_summary.csv", "sweep_overlay.png"
