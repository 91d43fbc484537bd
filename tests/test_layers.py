"""The package's layers: every module imports only from its own layer and the layers below it
(engine < plotting < public facade < run < tracking < sweep < app < __main__), module imports
form no cycle, the engine loads none of the app's heavy libraries, its settings load without
torch (the app checks a config before importing it), and the zoo is ordinary callables."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lrexp"
ENGINE = PACKAGE / "engine"
# Each layer's modules, lowest first: a module may import its own layer and those below.
LAYERS = (
    ("lrexp.engine",),
    ("lrexp.plotting",),
    ("lrexp", "lrexp.finder", "lrexp.schedules"),  # the public Python API (a facade)
    ("lrexp.run",),
    ("lrexp.tracking",),
    ("lrexp.sweep",),
    ("lrexp.app",),
    ("lrexp.__main__",),
)
# The zoo: ordinary callables a config names by _target_, which know nothing of Hydra
ZOO = [PACKAGE / "app" / "data.py", *sorted((PACKAGE / "app" / "models").glob("*.py"))]
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


def _imported_modules(path: Path, tree: ast.AST | None = None,
                      skip: frozenset[int] | set[int] = frozenset()) -> list[str]:
    """Every module a file imports, anywhere in it (functions and TYPE_CHECKING blocks too,
    less the nodes in ``skip``), relative imports made absolute."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree or ast.parse(path.read_text())):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return names


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int | None:
    """The rank of ``module``'s layer (None outside lrexp): its longest matching prefix."""
    found = [(len(name), rank) for rank, names in enumerate(LAYERS) for name in names
             if module == name or module.startswith(name + ".") and name != "lrexp"]
    return max(found)[1] if found else None


def test_every_module_of_the_package_has_a_layer():
    assert [path for path in PACKAGE.rglob("*.py") if _layer(_module_name(path)) is None] == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda path: str(path.relative_to(PACKAGE)))
def test_imports_point_down_only(path):
    own = _layer(_module_name(path))
    above = [name for name in _imported_modules(path)
             if (_layer(name) or 0) > own]  # type: ignore[operator]
    assert above == []


def _top_level_imports(path: Path) -> set[str]:
    """The lrexp modules a file imports when it is imported (not those inside functions)."""
    tree = ast.parse(path.read_text())
    nested = {id(node) for function in ast.walk(tree)
              if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
              for node in ast.walk(function)}
    modules = {_module_name(each) for each in PACKAGE.rglob("*.py")}
    return {name for name in _imported_modules(path, tree, skip=nested) if name in modules}


def test_module_imports_form_no_cycle():
    graph = {_module_name(path): _top_level_imports(path) - {_module_name(path)}
             for path in PACKAGE.rglob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join([*path, module])
        if module not in done:
            for imported in sorted(graph.get(module, ())):
                visit(imported, (*path, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())


@pytest.mark.parametrize("path", ZOO, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_the_zoo_imports_neither_hydra_nor_the_schema(path):
    names = _imported_modules(path)
    assert [name for name in names if name.split(".")[0] in ("hydra", "omegaconf")
            or name.startswith("lrexp.app.schema")] == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda path: str(path.relative_to(PACKAGE)))
def test_every_module_says_what_it_is(path):
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and docstring.strip()


def test_the_statuses_runs_are_closed_with_are_spelled_once():
    """FINISHED, KILLED and FAILED come from lrexp.run.life everywhere else."""
    life = PACKAGE / "run" / "life.py"
    spelled = [f"{path.relative_to(PACKAGE)}:{node.lineno}"
               for path in PACKAGE.rglob("*.py") if path != life
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and node.value in ("FINISHED", "KILLED", "FAILED")]
    assert spelled == []
