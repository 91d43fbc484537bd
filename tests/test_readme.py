"""The README runs as written: its Python blocks run and print what it shows (the same words,
numbers within a tolerance), every ``python -m lrexp ...`` line composes into configs that pass
the checks (every job of a sweep line), and every module or script it names exists. A block the
README marks with ``<!-- readme-test: skip (why) -->`` just before it is not run (API references,
placeholders)."""

import math
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lrexp.app.schema import check, register
from lrexp.sweep.launchers import missing_launcher_extra

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CONF = str(ROOT / "conf")
register()

_BLOCK = re.compile(
    r"(?P<skip><!-- readme-test: skip[^>]*-->\s*)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
# commands quoted inline too (the scale ladder's table)
_INLINE = re.compile(r"`((?:python -m lrexp|torchrun)[^`]*)`")


def blocks(lang: str) -> list[str]:
    return [m["body"] for m in _BLOCK.finditer(README) if m["lang"] == lang and not m["skip"]]


def _printed_after(body: str) -> str | None:
    """The ```text block right after "prints:" following ``body``, if the README shows one."""
    after = README[README.index(body) + len(body):]
    match = re.match(r"```\s*\n+prints[^\n]*:\s*\n+```text\n(.*?)```", after, re.S)
    return match[1] if match else None


def shell_lines() -> list[str]:
    lines = []
    for body in blocks("bash"):
        joined = body.replace("\\\n", " ")
        for line in joined.splitlines():
            command = line.split(" #", 1)[0].strip()
            if command:
                lines.append(command)
    return lines + _INLINE.findall(README)


def lrexp_commands() -> list[list[str]]:
    """The arguments of every app command (``python -m lrexp ...``, ``torchrun ... -m lrexp``)."""
    commands = []
    for line in shell_lines():
        words = shlex.split(line)
        if "lrexp" in words and words[words.index("lrexp") - 1] == "-m":
            arguments = words[words.index("lrexp") + 1:]
            if not any(a.startswith("--") for a in arguments):  # --help, --cfg: no overrides
                commands.append(arguments)
    return commands


def _jobs(arguments: list[str]) -> list[list[str]]:
    """The override lists Hydra's basic sweeper makes of one command line."""
    if "-m" not in arguments and "--multirun" not in arguments:
        return [arguments]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in arguments if a not in ("-m", "--multirun")]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[o for o in overrides if "," not in o],
                      return_hydra_config=True)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + overrides)
    # Hydra's own settings (launcher, run dir) composed above with the command; a job's config,
    # all check() reads, is the same without them: the sweep lines that differ only in their
    # launcher share their jobs' compositions (each costs ~0.25 s)
    return [[o for o in job if not o.startswith("hydra")]
            for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


@cache
def _composed(job: tuple[str, ...]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(job))


def test_the_readme_names_commands_to_check():
    assert len(lrexp_commands()) >= 8 and blocks("python")


@pytest.mark.parametrize("arguments", lrexp_commands(), ids=" ".join)
def test_every_app_command_composes_and_passes_the_checks(arguments):
    if (extra := missing_launcher_extra(arguments)) is not None:
        pytest.skip(f"its launcher needs the [{extra}] extra")
    check(_composed(tuple(_jobs(arguments)[0])))  # a sweep line's first job: the slow test


@pytest.mark.slow
@pytest.mark.parametrize("arguments", [a for a in lrexp_commands() if "-m" in a], ids=" ".join)
def test_every_job_of_every_sweep_line_composes_and_passes_the_checks(arguments):
    if (extra := missing_launcher_extra(arguments)) is not None:
        pytest.skip(f"its launcher needs the [{extra}] extra")
    for job in _jobs(arguments):
        check(_composed(tuple(job)))


@pytest.mark.slow
def test_every_module_and_script_the_readme_runs_exists():
    for line in shell_lines():
        words = shlex.split(line)
        for index, word in enumerate(words[:-1]):
            if word == "-m" and words[index + 1].startswith("lrexp."):
                module = words[index + 1]
                help_run = subprocess.run([sys.executable, "-m", module, "--help"],
                                          capture_output=True, text=True, timeout=120)
                assert help_run.returncode == 0, f"{line}: {help_run.stderr[-500:]}"
        for word in words:
            if word.startswith("scripts/"):
                assert (ROOT / word).is_file(), line


@pytest.mark.slow
@pytest.mark.parametrize("body", blocks("python"), ids=lambda body: body.splitlines()[0][:40])
def test_python_blocks_run_and_print_what_the_readme_shows(body, tmp_path):
    proc = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = _printed_after(body)
    if shown is not None:
        assert_same_output(proc.stdout, shown)


# A number as Python prints one: 0.0456, 102.9, 1e-07, 9.120108393559095e-03
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
# How far a printed number may stray from the README's: a torch or scikit-learn release moves
# the losses a little, and a suggestion may move to the next point of the LR grid.
README_REL_TOLERANCE = 0.25


def assert_same_output(printed: str, shown: str) -> None:
    """``printed`` reads as the README ``shown``: the same words in the same places, each number
    within ``README_REL_TOLERANCE`` of the one shown."""
    assert _NUMBER.sub("#", printed.strip()) == _NUMBER.sub("#", shown.strip())
    for got, expected in zip(_NUMBER.findall(printed), _NUMBER.findall(shown), strict=True):
        assert math.isclose(float(got), float(expected), rel_tol=README_REL_TOLERANCE), \
            f"printed {got}, the README shows {expected}"


def test_readme_outputs_are_compared_by_shape_and_tolerance():
    shown = "0.0456 default (edge) high (0.009120108393559095, 0.1824021678711819)"
    assert_same_output("0.0457 default (edge) high (0.00913, 0.1826)", shown)
    with pytest.raises(AssertionError):
        assert_same_output("0.0456 default (valley) high (0.00912, 0.1824)", shown)
    with pytest.raises(AssertionError):
        assert_same_output("0.456 default (edge) high (0.00912, 0.1824)", shown)
