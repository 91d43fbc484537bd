"""The wheel: built from the checkout's files, it holds every module and every config; installed
into a fresh venv it composes every config option and runs the app from an unrelated folder."""

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the lrexp_slurm launcher's source and where the wheel ships it (pyproject's package-dir)
PLUGIN_SOURCE, PLUGIN_PACKAGE = "lrexp/sweep/hydra_plugin/", "hydra_plugins/lrexp_slurm_launcher/"
BASE = "base"  # conf folders of partial nodes, not options (as in test_configs)

# Run by the venv's interpreter: compose each option given on stdin from the INSTALLED configs
# and print the choice Hydra recorded for it (or the error).
COMPOSE_EVERY_OPTION = """
import json, sys
from hydra import compose, initialize_config_dir
from lrexp.app.main import CONFIG_PATH
from lrexp.app.schema import register

register()
chosen = {}
with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
    for option in json.load(sys.stdin):
        group = option.split("=")[0]
        try:
            cfg = compose("config", overrides=[option], return_hydra_config=True)
            chosen[option] = f"{group}={cfg.hydra.runtime.choices[group]}"
        except Exception as error:
            chosen[option] = f"{type(error).__name__}: {error}"
print(json.dumps(chosen))
"""


def project_files() -> list[str]:
    """The checkout's files as git sees them (tracked, and new files not ignored): what a clean
    clone plus the work in progress holds, without build/ or outputs/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return sorted(name for name in listed.split("\0") if name and (ROOT / name).is_file())


def running_site_dirs() -> list[str]:
    """Where the interpreter running the tests finds its packages (torch, hydra, ...): its
    site-packages and, where enabled, the user's."""
    dirs = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    return list(dict.fromkeys(path for path in dirs if os.path.isdir(path)))


def fresh_venv(path: Path) -> Path:
    """A venv of the interpreter running the tests that sees that interpreter's packages.

    ``--system-site-packages`` would not do: from inside a venv it inherits the base
    interpreter's packages, not the running environment's. A .pth file in the new venv's own
    site-packages adds the running environment's site dirs after it, so what is installed into
    the venv wins. An editable install of lrexp out there stays behind too: its finder (setuptools'
    ``__editable__`` .pth) is appended to sys.meta_path after the path finder that finds the
    venv's copy; the test checks where lrexp is imported from."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                              "'purelib'))"], capture_output=True, text=True, check=True)
    adds = "; ".join(f"site.addsitedir({where!r})" for where in running_site_dirs())
    pth = Path(purelib.stdout.strip()) / "zz_running_environment.pth"
    pth.write_text(f"import site; {adds}\n")  # an "import" line of a .pth file runs at start
    return python


def clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {
        "MPLBACKEND": "Agg", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def build_wheel(files: list[str], tmp_path: Path) -> Path:
    """The wheel of a copy of the checkout: a stale build/ in the checkout (setuptools reuses
    build/lib) would ship modules that no longer exist."""
    source = tmp_path / "source"
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    # --no-build-isolation: the running environment's setuptools (the dev extra), no network
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(wheels), str(source)],
                           capture_output=True, text=True, env=clean_env())
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("lrexp-*.whl")
    return wheel


def options(files: list[str]) -> list[str]:
    """'group=option' for every config of the checkout but the primary one and the base nodes."""
    configs = [Path(name).relative_to("conf") for name in files
               if name.startswith("conf/") and name.endswith(".yaml")]
    return sorted(f"{path.parent.as_posix()}={path.stem}" for path in configs
                  if path.parent != Path(".") and BASE not in path.parts)


@pytest.mark.slow
def test_wheel_ships_every_module_and_config_and_runs_installed_from_anywhere(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout: the wheel is built from the files git lists")
    files = project_files()
    wheel = build_wheel(files, tmp_path)

    with zipfile.ZipFile(wheel) as archive:
        shipped = {name: archive.read(name) for name in archive.namelist()}
    modules = {name.replace(PLUGIN_SOURCE, PLUGIN_PACKAGE) for name in files
               if name.startswith("lrexp/") and name.endswith(".py")}
    assert {name for name in shipped if name.endswith(".py")} == modules
    assert any(name.startswith(PLUGIN_PACKAGE) for name in modules)
    configs = {name for name in files if name.startswith("conf/")}
    assert all(name.endswith(".yaml") for name in configs)  # package-data ships **/*.yaml
    assert {name for name in shipped if name.startswith("lrexp/conf/")} == \
        {f"lrexp/{name}" for name in configs}
    assert all(shipped[f"lrexp/{name}"] == (ROOT / name).read_bytes() for name in configs)

    python = fresh_venv(tmp_path / "venv")
    env = clean_env()
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                                "--no-index", str(wheel)], capture_output=True, text=True, env=env)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import lrexp, lrexp.app.main as main; print(lrexp.__file__); "
         "print(main.CONFIG_PATH); import hydra_plugins.lrexp_slurm_launcher as plugin; "
         "print(plugin.LrexpSlurmLauncher.__module__ and plugin.__file__)"], cwd=elsewhere,
        env=env, capture_output=True, text=True, check=True).stdout.split()
    venv = str(tmp_path / "venv")
    assert all(path.startswith(venv) for path in where), where  # the wheel's copy, not ours

    every_option = options(files)
    composed = subprocess.run([str(python), "-c", COMPOSE_EVERY_OPTION],
                              input=json.dumps(every_option), cwd=elsewhere, env=env,
                              capture_output=True, text=True)
    assert composed.returncode == 0, composed.stderr
    assert json.loads(composed.stdout) == {option: option for option in every_option}
    assert {"hydra/launcher=lrexp_slurm", "experiment=cifar100_vgg16", "sweep=archs"} <= \
        set(every_option)

    commands = {"module": [str(python), "-m", "lrexp"], "script": [str(python.parent / "lrexp")]}
    for name, command in commands.items():
        cwd = elsewhere / name  # a folder each: run dirs are named by the second
        cwd.mkdir()
        proc = subprocess.run([*command, "num_iter=20", "tracking=none", "progress=false"],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(list(cwd.glob("outputs/*/*/curve.csv"))) == 1
