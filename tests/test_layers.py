"""The package's layers: the engine imports nothing above it, loads none of the app's heavy
libraries, and its settings load without torch (the app checks a config before importing it)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lrexp"
ENGINE = PACKAGE / "engine"
ABOVE_THE_ENGINE = ("lrexp.app", "lrexp.tracking", "lrexp.sweep", "lrexp.plotting",
                    "lrexp.finder")
NOT_FOR_THE_ENGINE = ("hydra", "omegaconf", "mlflow", "matplotlib")

# Run in a fresh interpreter: the test process has long imported everything.
_IMPORT_THE_ENGINE = """
import importlib, json, pkgutil, sys
import lrexp.engine.settings
without_torch = [name for name in ("torch", "numpy") if name in sys.modules]
import lrexp, lrexp.engine, lrexp.schedules
lrexp.range_test
engine = [info.name for info in pkgutil.iter_modules(lrexp.engine.__path__, "lrexp.engine.")]
for name in engine:
    importlib.import_module(name)
print(json.dumps({"settings_loaded": without_torch, "engine": engine, "loaded": list(sys.modules)}))
"""


@pytest.fixture(scope="module")
def engine_import():
    done = subprocess.run([sys.executable, "-c", _IMPORT_THE_ENGINE], capture_output=True,
                          text=True, check=True, cwd=PACKAGE.parent)
    return json.loads(done.stdout)


def test_importing_the_engine_loads_no_hydra_omegaconf_mlflow_or_matplotlib(engine_import):
    assert len(engine_import["engine"]) >= 7  # every module of lrexp/engine was imported
    assert "lrexp.engine.rangetest" in engine_import["loaded"]
    loaded = {name.split(".")[0] for name in engine_import["loaded"]}
    assert loaded.isdisjoint(NOT_FOR_THE_ENGINE), loaded & set(NOT_FOR_THE_ENGINE)


def test_the_settings_load_without_torch_or_numpy(engine_import):
    assert engine_import["settings_loaded"] == []


def _imported_modules(path: Path) -> list[str]:
    """Every module a file imports, anywhere in it (functions and TYPE_CHECKING blocks too),
    relative imports made absolute."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return names


@pytest.mark.parametrize("path", sorted(ENGINE.glob("*.py")), ids=lambda path: path.name)
def test_the_engine_imports_nothing_above_it(path):
    above = [name for name in _imported_modules(path)
             if any(name == layer or name.startswith(layer + ".") for layer in ABOVE_THE_ENGINE)]
    assert above == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda path: str(path.relative_to(PACKAGE)))
def test_every_module_says_what_it_is(path):
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and docstring.strip()
