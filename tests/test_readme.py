"""The README and the documents it links (scripts/*.md, tests/*.md) run as written: their Python
blocks run and print what they show, every output marked ``<!-- output of: COMMAND -->`` is what
COMMAND prints (the same words, numbers within a tolerance: never exact digits), every
``python -m lrexp ...`` line composes into configs that pass the checks (every job of a sweep
line), every module or script they name and every link they hold exists, and the README keeps the
essentials in order within 300 lines. A block marked ``<!-- readme-test: skip (why) -->`` just
before it is not run (API references, placeholders), nor is a file of the README's own-project
example (``<!-- file: PATH -->``: tests/test_own_project.py writes and runs those)."""

import math
import os
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

# The documents the README links, beside the scripts and tests behind them
_DOC_LINK = re.compile(r"\]\(((?:scripts|tests)/[\w.-]+\.md)(?:#[\w-]*)?\)")
DOCS = {"README.md": README} | {
    path: (ROOT / path).read_text() for path in sorted(set(_DOC_LINK.findall(README)))
    if (ROOT / path).is_file()}

_BLOCK = re.compile(r"(?P<skip><!-- (?:readme-test: skip|file: )[^>]*-->\s*)?"
                    r"```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
# commands quoted inline too (the scale ladder's table)
_INLINE = re.compile(r"`((?:python -m lrexp|torchrun)[^`]*)`")
# An output a document shows, and the command that prints it; "numbers vary": statistics of a
# few noisy curves (the repeats' spread), whose numbers only the words around them pin
_OUTPUT = re.compile(r"<!-- output of: (?P<command>[^;>]*?)(?P<vary>; numbers vary)? -->\s*"
                     r"```text\n(?P<shown>.*?)```", re.S)


def blocks(lang: str) -> list[str]:
    return [m["body"] for text in DOCS.values() for m in _BLOCK.finditer(text)
            if m["lang"] == lang and not m["skip"]]


def _printed_after(body: str) -> str | None:
    """The ```text block right after "prints:" following ``body``, if its document shows one."""
    text = next(text for text in DOCS.values() if body in text)
    after = text[text.index(body) + len(body):]
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
    return lines + [line for text in DOCS.values() for line in _INLINE.findall(text)]


def _outputs() -> list[tuple[str, str, bool]]:
    return [(m["command"], m["shown"], m["vary"] is None)
            for text in DOCS.values() for m in _OUTPUT.finditer(text)]


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
    assert len(DOCS) >= 9 and _outputs()


# What a new user reads first, in this order (issue 24); the rest lives in the linked documents
SECTIONS = ["Setup", "Quick start", "Your own project", "Python API", "Configuration", "MLflow",
            "Scale-out", "Tests"]
README_MAX_LINES = 300


def test_the_readme_leads_with_the_essentials_in_order_within_300_lines():
    assert README.count("\n") <= README_MAX_LINES
    assert re.findall(r"^## (.+)$", README, re.M) == SECTIONS
    assert README.index("lrexp runs the LR range test") < README.index("## Setup")


def _anchors(text: str) -> set[str]:
    """The ids GitHub gives a document's headings."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("name", sorted(DOCS))
def test_every_link_of_the_readme_and_its_documents_leads_somewhere(name):
    """Files and folders by relative path, headings by their anchor: a part that moved leaves no
    dead link behind."""
    base = (ROOT / name).parent
    for target in re.findall(r"\]\(([^)\s]+)\)", DOCS[name]):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (base / path).resolve() if path else ROOT / name
        assert linked.exists(), f"{name}: {target}"
        if anchor:
            assert anchor in _anchors(linked.read_text()), f"{name}: {target}"


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


@pytest.mark.slow
@pytest.mark.parametrize(("command", "shown", "numbers"), _outputs(),
                         ids=[command for command, *_ in _outputs()])
def test_every_output_shown_is_what_its_command_prints(command, shown, numbers, tmp_path):
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "lrexp"], command  # the app, run in a folder of its own
    # as a user runs it: no store of theirs, torch's own thread count (the session pins one)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("MLFLOW_") and key != "OMP_NUM_THREADS"}
    proc = subprocess.run([sys.executable, *words[1:]], cwd=tmp_path, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert_shown_in(proc.stdout, shown, numbers=numbers)


# A number as Python prints one: 0.0456, 102.9, 1e-07, 9.120108393559095e-03
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
# How far a printed number may stray from the README's: a torch or scikit-learn release moves
# the losses a little, and a suggestion may move to the next point of the LR grid.
README_REL_TOLERANCE = 0.25
# Logging's prefix of a console line: [date time][logger][LEVEL] -
_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\[[^\]]*\](?:\[[A-Z]+\])? ?-? ?")


def _lines(text: str) -> list[str]:
    """Text's lines as compared: progress-bar redraws split off, log prefixes and the runs of
    spaces that align columns (widths follow the numbers) collapsed."""
    return [" ".join(_LOG_PREFIX.sub("", line).split()) for line in re.split(r"[\r\n]+", text)]


def assert_same_output(printed: str, shown: str) -> None:
    """``printed`` reads as the README ``shown``: the same words in the same places, each number
    within ``README_REL_TOLERANCE`` of the one shown."""
    printed, shown = "\n".join(_lines(printed.strip())), "\n".join(_lines(shown.strip()))
    assert _NUMBER.sub("#", printed) == _NUMBER.sub("#", shown)
    for got, expected in zip(_NUMBER.findall(printed), _NUMBER.findall(shown), strict=True):
        assert math.isclose(float(got), float(expected), rel_tol=README_REL_TOLERANCE), \
            f"printed {got}, the README shows {expected}"


def assert_shown_in(printed: str, shown: str, numbers: bool = True) -> None:
    """The ``shown`` lines appear together, in order, in ``printed``, each as the same words with
    numbers within the tolerance, or any numbers without ``numbers`` (a command prints more than
    a document shows)."""
    lines, wanted = _lines(printed), _lines(shown.strip())
    shape = [_NUMBER.sub("#", line) for line in wanted]
    for start in range(len(lines) - len(wanted) + 1):
        window = lines[start:start + len(wanted)]
        if [_NUMBER.sub("#", line) for line in window] == shape:
            if numbers:
                assert_same_output("\n".join(window), "\n".join(wanted))
            return
    pytest.fail(f"not printed (same words, any numbers):\n{shown}\nprinted:\n{printed[-3000:]}")


def test_readme_outputs_are_compared_by_shape_and_tolerance():
    shown = "0.0456 default (edge) high, supported 0.00912 to 0.182"
    assert_same_output("0.0457 default (edge) high, supported 0.00913 to 0.1826", shown)
    with pytest.raises(AssertionError):
        assert_same_output("0.0456 default (valley) high, supported 0.00912 to 0.182", shown)
    with pytest.raises(AssertionError):
        assert_same_output("0.456 default (edge) high, supported 0.00912 to 0.182", shown)


def test_an_output_shown_is_found_among_what_a_command_prints():
    shown = ("  min loss 2.07 at LR 0.631; diverged at LR 3.31\n"
             "  CyclicLR: base_lr=0.00251, max_lr=0.381")
    printed = ("[2026-12-05 12:44:02,504][lrexp.app.runner][INFO] - LR range test: 95 steps\r"
               "  min loss 2.1 at LR 0.63;   diverged at LR 3.3\n  CyclicLR: base_lr=0.0025, "
               "max_lr=0.38\n  files in /tmp/x")
    assert_shown_in(printed, shown)
    with pytest.raises(AssertionError):  # a number past the tolerance
        assert_shown_in(printed.replace("3.3", "9.9"), shown)
    assert_shown_in(printed.replace("3.3", "9.9"), shown, numbers=False)
    with pytest.raises(pytest.fail.Exception):  # a line that is not printed
        assert_shown_in(printed.replace("CyclicLR", "OneCycleLR"), shown)
