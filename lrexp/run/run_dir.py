"""A run dir read back without trusting it (``import_run``'s input may come from anywhere):
only regular files that live in it are read (links are skipped with a warning), the config is
plain YAML whose ${...} stay literal text, and every file is checked by the same readers the
run's writers pair with (``RunSummary.from_dict``, ``RangeTestResult.from_text``), before
anything is sent."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lrexp.engine.curve_file import CurveFileError
from lrexp.engine.result import RangeTestResult
from lrexp.run.files import (
    ARTIFACT_SUFFIXES,
    CONFIG_FILE,
    CURVE_FILE,
    HYDRA_DIR,
    LOG_SUFFIX,
    REPEATS_FILE,
    SUMMARY_FILE,
)
from lrexp.run.life import KILLED, run_names
from lrexp.run.summary import RunSummary, SummaryError, is_number

__all__ = ["RunDir", "RunDirError", "read_run_dir", "resolved_dir", "shown"]

log = logging.getLogger(__name__)

# Open without following a final link, and without blocking on a FIFO planted in the dir.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


class RunDirError(ValueError):
    """A run dir that cannot be imported; the message says what is wrong and what to do."""


# -- reading the run dir without trusting it ------------------------------------------------------
def stage_run_dir(run_dir: Path, staged: Path) -> set[str]:
    """Copy into ``staged`` every file the import reads or uploads (the top level's artifacts and
    logs, all of .hydra) that is a regular file living in ``run_dir``; return the names of the
    ones skipped, each also warned about once.

    Nothing is looked up through a link: os.fwalk holds each folder open and never descends into
    a linked folder, and files open relative to it with O_NOFOLLOW, so a link swapped in after a
    check is refused too, unread.
    """
    skipped: set[str] = set()
    for folder, subfolders, names, folder_fd in os.fwalk(run_dir):
        where = Path(folder).relative_to(run_dir)
        subfolders[:] = _subfolders_to_walk(run_dir, where, subfolders, folder_fd, skipped)
        for name in sorted(names):
            if not _wanted_file(where / name):
                continue
            refusal = _copy_regular_file(name, folder_fd, staged / where / name)
            if refusal:
                skipped.add(_skip(run_dir, where / name, refusal))
    return skipped


def _subfolders_to_walk(run_dir: Path, where: Path, subfolders: list[str], folder_fd: int,
                        skipped: set[str]) -> list[str]:
    """.hydra and the folders inside it, less the links (warned about)."""
    kept = []
    for name in sorted(subfolders):
        if (where / name).parts[0] != HYDRA_DIR:
            continue
        if _is_link(name, folder_fd):
            skipped.add(_skip(run_dir, where / name, "a symlink"))
        else:
            kept.append(name)
    return kept


def _wanted_file(relative: Path) -> bool:
    if relative.parts[0] == HYDRA_DIR:
        return True
    return len(relative.parts) == 1 and relative.suffix in (*ARTIFACT_SUFFIXES, LOG_SUFFIX)


def _is_link(name: str, folder_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode)
    except OSError:  # gone since it was listed: nothing to walk into
        return True


def _copy_regular_file(name: str, folder_fd: int, target: Path) -> str | None:
    """Copy ``name`` to ``target`` if it is a regular file; else why not (nothing was read)."""
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=folder_fd)
    except OSError as error:
        return "a symlink" if error.errno == errno.ELOOP else f"unreadable ({error.strerror})"
    with open(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "not a regular file"
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as copy:
            shutil.copyfileobj(source, copy)
    return None


def _skip(run_dir: Path, relative: Path, why: str) -> str:
    log.warning("Skipped %s: %s; import_run reads and uploads only regular files that live in "
                "the run dir.", run_dir / relative, why)
    return str(relative)


def _read_text(staged: Path, run_dir: Path, name: str, skipped: set[str]) -> str | None:
    """A staged file's text; None if the run dir has no such file."""
    if name in skipped:
        raise RunDirError(
            f"{run_dir / name} is not a regular file in the run dir (see the warning above), so "
            f"import_run will not read it. Put the file itself (not a link) in {run_dir}."
        )
    try:
        return (staged / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as error:
        raise RunDirError(
            f"{run_dir / name} is not UTF-8 text ({error.reason} at byte {error.start}). "
            f"Restore the {name} that lrexp wrote, or fix the file."
        ) from None


# -- checking what was read ---------------------------------------------------------------------
def parse_config(text: str, path: Path) -> dict[str, Any]:
    """The run's config as written: plain YAML, so an ${...} interpolation stays literal text
    and is never resolved (it could read the importer's environment or files)."""
    redo = (f"Restore the {path.name} that lrexp wrote at the start of the run, or write the "
            "run's settings as a YAML mapping.")
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
            # lrexp never writes aliases, and a few can expand into a huge params table
            raise RunDirError(f"{path} uses YAML aliases (*name), which lrexp never writes. "
                              + redo)
        config = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as error:
        raise RunDirError(f"{path} is not valid YAML ({_one_line(error)}). {redo}") from None
    if not isinstance(config, dict):
        raise RunDirError(f"{path} holds {_kind(config)}, not a mapping of settings. {redo}")
    return config


def parse_summary(text: str, path: Path) -> RunSummary:
    """summary.json, with every field the import uses of the right type."""
    redo = (f"Restore the {path.name} that lrexp wrote, or delete it to import the curve as a "
            "KILLED run.")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise RunDirError(f"{path} is not valid JSON ({_one_line(error)}). {redo}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} holds {_kind(data)}, not a JSON object. {redo}")
    try:
        summary = RunSummary.from_dict(data)
    except SummaryError as error:
        raise RunDirError(f"{path}: {error.key!r} is {shown(error.value)}, expected "
                          f"{error.expected}. {redo}") from None
    return summary


def parse_curve(run_dir: Path, curve: str, repeats: str | None) -> RangeTestResult:
    """curve.csv (and a repeated test's curve_repeats.csv), through the engine's strict reader:
    a cut last row is dropped with a warning, any other bad row refused, and repeats must give
    exactly curve.csv's median curve."""
    try:
        return RangeTestResult.from_text(curve, repeats)
    except CurveFileError as error:
        name = REPEATS_FILE if error.repeats else CURVE_FILE
        advice = ("Restore the file lrexp wrote, or delete it to import the median curve alone."
                  if error.repeats else f"Restore the {name} that lrexp wrote, or rerun the "
                  "range test.")
        raise RunDirError(f"{run_dir / name} {error}. {advice}") from None


def _kind(value: Any) -> str:
    kinds = {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
             str: "a string", list: "a list", dict: "a mapping"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def shown(value: Any, limit: int = 60) -> str:
    """``value`` as JSON (cut to ``limit``), with its kind unless it is a string."""
    text = json.dumps(value, default=repr)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text if isinstance(value, str) else f"{text} ({_kind(value)})"


def _one_line(error: BaseException) -> str:
    """A parser's error in one line: YAML's problem and where, else the whole message."""
    problem, mark = getattr(error, "problem", None), getattr(error, "problem_mark", None)
    if problem and mark:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())


# -- the checked run dir ----------------------------------------------------------------------
@dataclass
class RunDir:
    """A run dir's checked contents: everything the import sends."""

    path: Path
    config: dict[str, Any]
    summary: RunSummary | None  # None: the run never finished (a crash, kill -9)
    curve: RangeTestResult

    @property
    def status(self) -> str:
        """The MLflow run status: a run without summary.json did not end by itself."""
        return KILLED if self.summary is None else self.summary.mlflow_status

    @property
    def names(self) -> dict[str, str]:
        """net, dataset and optimizer: the summary's, else the config's (``run_names``, the
        rule the runner names runs by)."""
        from_config = run_names(self.config)
        recorded = {} if self.summary is None else {
            key: getattr(self.summary, key) for key in from_config}
        return {key: recorded.get(key, "?") if recorded.get(key, "?") != "?" else value
                for key, value in from_config.items()}

    @property
    def tracking(self) -> dict[str, Any]:
        """Its tracking settings that can be used: uri and experiment as non-empty text,
        timeout_s as a positive number of seconds."""
        tracking = self.config.get("tracking")
        tracking = tracking if isinstance(tracking, dict) else {}
        usable = {key: tracking[key] for key in ("uri", "experiment")
                  if isinstance(tracking.get(key), str) and tracking[key]}
        timeout_s = tracking.get("timeout_s")
        if is_number(timeout_s) and 0 < timeout_s < math.inf:
            usable["timeout_s"] = float(timeout_s)
        return usable


def read_run_dir(run_dir: Path, staged: Path) -> RunDir:
    """Stage ``run_dir`` into ``staged`` and check everything the import will send."""
    skipped = stage_run_dir(run_dir, staged)
    texts = {name: _read_text(staged, run_dir, name, skipped)
             for name in (CONFIG_FILE, SUMMARY_FILE, CURVE_FILE, REPEATS_FILE)}
    missing = [name for name in (CONFIG_FILE, CURVE_FILE) if texts[name] is None]
    if missing:
        raise RunDirError(
            f"{run_dir} is not an lrexp run dir: {' and '.join(missing)} missing. Pass the folder "
            "that holds config.yaml and curve.csv (e.g. outputs/<date>/<time>)."
        )
    config_text, summary_text = texts[CONFIG_FILE], texts[SUMMARY_FILE]
    curve_text = texts[CURVE_FILE]
    assert config_text is not None and curve_text is not None  # checked as missing above
    # a repeated test that finished: curve.csv is the median of curve_repeats.csv's curves
    curve = parse_curve(run_dir, curve_text, texts[REPEATS_FILE])
    return RunDir(
        path=run_dir,
        config=parse_config(config_text, run_dir / CONFIG_FILE),
        summary=(None if summary_text is None
                 else parse_summary(summary_text, run_dir / SUMMARY_FILE)),
        curve=curve,
    )


def resolved_dir(run_dir: Path | str) -> Path:
    """The run dir itself, once: a link to it is fine, what matters is what lies inside."""
    try:
        path = Path(run_dir).resolve(strict=True)
    except (OSError, RuntimeError):
        path = None
    if path is None or not path.is_dir():
        raise RunDirError(f"{run_dir} is not a folder. Pass a run dir written by lrexp: the "
                          "folder that holds config.yaml and curve.csv (outputs/<date>/<time>).")
    return path


