"""``python -m lrexp [overrides]``: compose the config with Hydra, run, exit with the code.

Exit codes (``lrexp.run.life``): 0 done, 2 bad config or input, 130 interrupted (partial results
kept), 143 the same after SIGTERM, 1 a crash.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn, cast

import hydra
from omegaconf import DictConfig

from lrexp.app.schema import register
from lrexp.run import stops
from lrexp.run.life import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE

register()

# In a checkout (or editable install) the configs are the top-level conf/; a wheel ships them
# inside the package as lrexp/conf.
_PACKAGE = Path(__file__).resolve().parent.parent
_PACKAGED = _PACKAGE / "conf"
CONFIG_PATH = str(_PACKAGED if _PACKAGED.is_dir() else _PACKAGE.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def _app(cfg: DictConfig) -> int:
    record = stops.current()
    if record is not None:  # None in a launcher's job process: its errors are its own
        record.task_started = True
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lrexp.app.runner import run

    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    code = run(cfg, keep_going=sweeping)
    if code and not sweeping:
        sys.exit(code)  # in a sweep the other jobs go on; the callback reports the failure
    return code


def _refuse(paragraph: str) -> NoReturn:
    """A user's mistake found before any work: one paragraph on stderr, exit 2."""
    sys.stderr.write(f"lrexp: error: {paragraph}\n")
    raise SystemExit(EXIT_BAD_INPUT)


def _fits_a_float(digits: str) -> bool:
    try:
        float(int(digits))
    except (OverflowError, ValueError):  # ValueError: past Python's 4300-digit int limit
        return False
    return True


def _refuse_numbers_out_of_range(overrides: list[str]) -> None:
    """An integer past a float's range (``max_lr=1<400 zeros>``) makes OmegaConf raise deep in
    Hydra's compose, which prints a traceback: refuse it here, before any work."""
    for override in overrides:
        key, sep, value = override.partition("=")
        digits = value.strip().lstrip("+-").replace("_", "")
        if sep and digits.isdigit() and len(digits) > 300 and not _fits_a_float(digits):
            _refuse(f"Invalid setting {key}={value[:12]}... ({len(digits)} digits): the number "
                    "is larger than any setting takes (a float holds up to "
                    f"{sys.float_info.max:.3g}); nothing was run. python -m lrexp --help lists "
                    "the settings and their ranges.")


_NUMBER_WORDS = {"float": "a number (e.g. 0.1 or 1e-3)", "int": "a whole number (e.g. 100)"}


def _number_settings() -> dict[str, str]:
    """The top-level settings that take a number: {name: "float" | "int"}."""
    import dataclasses

    from lrexp.app.schema import LrexpConfig

    kinds = {float: "float", int: "int", "float": "float", "int": "int"}
    return {field.name: kinds[field.type] for field in dataclasses.fields(LrexpConfig)
            if field.type in kinds}


def _not_a_number(value: object, kind: str) -> bool:
    """Whether OmegaConf would refuse ``value`` for a ``kind`` ("float" or "int") setting: an
    int setting takes an int or a string of one, a float setting any number or a string of one
    (None too: these settings are not optional)."""
    if isinstance(value, str) and "${" in value:
        return False  # an interpolation: resolved (and checked) later
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int) or (kind == "float" and isinstance(value, float)):
        return False
    convert = int if kind == "int" else float
    try:
        convert(value) if isinstance(value, str) else None
    except ValueError:
        return True
    return not isinstance(value, str)


def _parsed(overrides: list[str]) -> list[Any]:
    """The command line's overrides as Hydra reads them; none where Hydra would refuse them
    (a malformed override is Hydra's to explain)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(
            [word for word in overrides if "=" in word and not word.startswith("-")])
    except Exception:  # noqa: BLE001 - Hydra's own message follows
        return []


def _config_folders(arguments: list[str]) -> list[Path] | None:
    """lrexp's conf/ and the folders ``--config-dir``/``-cd`` add (their groups are settings
    too); None when ``--config-path`` or ``--config-name`` replace lrexp's primary config."""
    folders = [Path(CONFIG_PATH)]
    for i, word in enumerate(arguments):
        name, _, value = word.partition("=")
        if name in ("--config-path", "-cp", "--config-name", "-cn") or name.lstrip(
                "+").startswith("hydra.searchpath"):
            return None
        if name in ("--config-dir", "-cd"):
            value = value or (arguments[i + 1] if i + 1 < len(arguments) else "")
            if not Path(value).is_dir():
                return None  # e.g. pkg://...: its groups cannot be listed here
            folders.append(Path(value))
    return folders


def _refuse_unknown_settings(overrides: list[str]) -> None:
    """``max_lrr=1``: one paragraph naming the closest setting, instead of Hydra's advice to
    append the key with ``+`` (which lrexp refuses later anyway)."""
    import dataclasses
    import difflib

    from lrexp.app.schema import LrexpConfig

    folders = _config_folders(overrides)
    if folders is None:
        return  # a primary config of the user's own: its keys are not lrexp's schema
    groups = {path.name for folder in folders for path in folder.iterdir() if path.is_dir()}
    known = {field.name for field in dataclasses.fields(LrexpConfig)} | groups | {"hydra"}
    parsed = _parsed(overrides)
    settings = [override for override in parsed if not (
        override.is_add() or override.is_force_add() or override.is_delete())]
    for override in settings:
        top = override.key_or_group.split(".")[0].split("/")[0]
        if top in known:
            continue
        close = difflib.get_close_matches(top, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        _refuse(f"Unknown setting {override.input_line}: lrexp has no setting {top}{hint}; "
                "nothing was run. python -m lrexp --help lists the settings and the config "
                "groups.")
    nested = [o for o in settings if "." in o.key_or_group and not o.key_or_group.startswith(
        "hydra.")]
    if nested:
        _refuse_unknown_nested_keys(nested, parsed, folders)


def _refuse_unknown_nested_keys(nested: list[Any], parsed: list[Any],
                                folders: list[Path]) -> None:
    """``net.chanels=3``: the closest key of the composed net (of each net a sweep names),
    instead of Hydra's "Key 'chanels' is not in struct"."""
    choices = [o for o in parsed if "." not in o.key_or_group
               and not o.key_or_group.startswith("hydra") and not o.is_delete()]
    composed: dict[tuple[str, str | None], dict[str, Any] | None] = {}  # a sweep's nets, once
    for override in nested:
        group = override.key_or_group.split(".")[0]
        for option in _options_of(group, choices):
            if (group, option) not in composed:
                composed[group, option] = _composed(choices, group, option, folders[1:])
            config = composed[group, option]
            if config is None:
                return  # Hydra cannot compose it either: its own message follows
            _refuse_a_missing_key(override, config, f" (with {group}={option})" if option else "")


def _refuse_a_missing_key(override: Any, config: dict[str, Any], picked: str) -> None:
    import difflib

    node, path = config, override.key_or_group.split(".")
    for depth, key in enumerate(path):
        if not isinstance(node, dict) or (depth == 0 and key not in node):
            return  # a list or a value below, or a preset group: Hydra checks those
        if key not in node:
            close = difflib.get_close_matches(key, sorted(map(str, node)), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            _refuse(f"Unknown setting {override.input_line}: {'.'.join(path[:depth])}{picked} "
                    f"has no key {key}{hint}; nothing was run. Its keys: "
                    f"{', '.join(sorted(map(str, node)))}. To add a key that is not there, "
                    f"write +{override.input_line}.")
        node = node[key]


def _options_of(group: str, choices: list[Any]) -> list[str | None]:
    """The options of ``group`` the command line picks (each of a sweep's); None: its default."""
    for override in choices:
        if override.key_or_group == group:
            return list(_values(override))
    return [None]


def _composed(choices: list[Any], group: str, option: str | None,
              config_dirs: list[Path]) -> dict[str, Any] | None:
    """lrexp's config as Hydra composes it from the command line's config choices (a sweep's
    other groups at their first option), unresolved; None where Hydra cannot compose it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    picked = [f"{o.key_or_group}={_first(o)}" for o in choices
              if o.key_or_group != group and _first(o) is not None]
    picked += [f"{group}={option}"] if option else []
    if config_dirs:
        searched = ",".join(f"file://{folder.resolve()}" for folder in config_dirs)
        picked.append(f"hydra.searchpath=[{searched}]")
    try:
        with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
            config = compose(config_name="config", overrides=picked)
    except Exception:  # noqa: BLE001 - Hydra's own message follows when lrexp runs
        return None
    return cast(dict[str, Any], OmegaConf.to_container(config, resolve=False))


def _first(override: Any) -> str | None:
    """An override's value, or its sweep's first choice; None for a range or an interval."""
    values = _values(override)
    return values[0] if values else None


def _values(override: Any) -> list[str]:
    """An override's value, or each choice of its sweep; none for a range or an interval."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return [str(v) for v in value.list]
    return [] if override.is_sweep_override() else [override.get_value_element_as_str()]


def _refuse_words_for_numbers(overrides: list[str]) -> None:
    """``max_lr=abc``: one paragraph with the fix, instead of Hydra's merge error."""
    from hydra.core.override_parser.types import ChoiceSweep

    numbers = _number_settings()
    for override in _parsed(overrides):
        kind, value = numbers.get(override.key_or_group), override.value()
        if kind is None or (override.is_sweep_override() and not isinstance(value, ChoiceSweep)):
            continue  # not a number setting, or a range: numbers by construction
        values = value.list if isinstance(value, ChoiceSweep) else [value]
        bad = [v for v in values if _not_a_number(v, kind)]
        if bad:
            _refuse(f"Invalid setting {override.input_line}: {override.key_or_group} takes "
                    f"{_NUMBER_WORDS[kind]}, not {bad[0]!r}; nothing was run. python -m lrexp "
                    "--help lists the settings and their ranges.")


def _require_launcher_extra(overrides: list[str]) -> None:
    """A launcher whose plugin is not installed: name the extra, instead of Hydra's "Could not
    load 'hydra/launcher/...'"."""
    from lrexp.sweep.launchers import missing_launcher_extra

    extra = missing_launcher_extra(overrides)
    if extra:
        option = next(word for word in overrides if word.startswith("hydra/launcher="))
        _refuse(f"{option} needs Hydra's {extra} launcher plugin, which is not installed; "
                f"nothing was run. Install it with pip install 'lrexp[{extra}]' (in a checkout: "
                f"pip install -e '.[{extra}]'), or leave the launcher out to run the sweep's "
                "jobs one after another.")


# Flags after which lrexp only prints (Hydra's): a reader that stops early is no failure.
_PRINT_ONLY = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve"}


def main() -> None:
    try:
        _checked_main()
    except BrokenPipeError:
        # the reader went away (`--help | head`): nothing is left to tell it; Python's own
        # flush of stdout at exit would raise again, so stdout goes nowhere from here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        printing_only = any(word.split("=")[0] in _PRINT_ONLY for word in sys.argv[1:])
        raise SystemExit(0 if printing_only else EXIT_BROKEN_PIPE) from None


def _checked_main() -> None:
    _refuse_numbers_out_of_range(sys.argv[1:])
    _refuse_unknown_settings(sys.argv[1:])
    _refuse_words_for_numbers(sys.argv[1:])
    _require_launcher_extra(sys.argv[1:])
    with stops.recording() as record:  # this command's stops, read for its exit code
        _main(record)


def _main(record: stops.ProcessRecord) -> None:
    try:
        with stops.sigterm_as_interrupt():  # also outside a job: between jobs, in Hydra
            _app()
    except SystemExit as exit_:
        # Hydra exits with 1 on errors of its own: a bad override, an unknown config option.
        # Those are the user's input, before any work: exit 2 like our own config errors.
        if exit_.code == 1 and not record.task_started:
            raise SystemExit(EXIT_BAD_INPUT) from None
        raise
    except ValueError as error:
        if record.task_started:
            raise
        # Hydra's own command-line checks (e.g. -m with --cfg) raise before any job
        sys.stderr.write(f"lrexp: error: {error}. See python -m lrexp --help.\n")
        raise SystemExit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        # Outside a range test (between sweep jobs, a second Ctrl-C): what was recorded stays.
        sys.stderr.write("lrexp: interrupted\n")
        raise SystemExit(record.interrupted_exit_code) from None
    if record.sweep_interrupted:  # a sweep stopped by Ctrl-C or SIGTERM; its summary is written
        raise SystemExit(record.interrupted_exit_code)
