"""The package layering of glip/ (see the design README): the import graph of every module, imports inside
functions included, has no cycle between files or between packages, and lower layers never import the
applications or the CLI.

Target layering (top imports bottom, never the reverse), as ``FLOORS`` below states it::

    cli/  ->  glip/__init__.py (the public face)
          ->  eval/ selftrain/ v2/ serve/ detect.py  ->  predictor.py  ->  engine/  ->  weights/ data/
          ->  losses/ export/  ->  models/
          ->  text/ config.py preprocess.py postprocess.py images.py runtime.py memory.py visualize.py box_coder.py
              fileio.py remote.py version.py lazy.py

Names loaded lazily count as imports: the values of a package's ``_EXPORTS`` map (PEP 562 ``__getattr__``),
``importlib.import_module("glip....")`` with a literal name, and ``from package import name`` resolves to the
module that ``_EXPORTS`` names for it.
"""

from __future__ import annotations

import ast
import importlib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "glip"
PACKAGES = (
    "cli",
    "eval",
    "engine",
    "models",
    "data",
    "losses",
    "text",
    "weights",
    "selftrain",
    "v2",
    "serve",
    "export",
)
LOWER = ("models", "data", "losses", "engine", "text")
APPLICATIONS = ("glip.v2", "glip.cli", "glip.eval")


def module_name(path: Path) -> str:
    parts = ("glip", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _known(name: str) -> str | None:
    """The longest prefix of dotted ``name`` that is a module of glip (``glip.a.b.func`` -> ``glip.a.b``)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules():
            return ".".join(parts)
        parts.pop()
    return None


@cache
def lazy_exports(package: str) -> dict[str, str]:
    """``public name -> defining module`` of a package that loads its names lazily through ``_EXPORTS``.

    The package's ``__init__`` is imported to read the map (those faces import nothing heavy)."""
    if not modules()[package].name == "__init__.py":
        return {}
    if "_EXPORTS" not in modules()[package].read_text():
        return {}
    exports = importlib.import_module(package)._EXPORTS
    return {k: v if v.startswith("glip.") else f"{package}.{v}" for k, v in exports.items()}


def _literal_import_module(node: ast.AST) -> str | None:
    """The module named by ``importlib.import_module("glip....")`` / ``import_module(...)`` with a literal."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    first = node.args[0]
    if called == "import_module" and isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def imports_of(name: str) -> set[str]:
    """The glip modules ``name`` imports anywhere in its file (top level, functions, TYPE_CHECKING), lazily
    loaded ones included (see the module docstring)."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set(lazy_exports(name).values()) - {name}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        literal = _literal_import_module(node)
        if literal is not None:
            targets = [literal]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            # `from pkg import submodule` imports the submodule; `from mod import name` the module; a name that
            # a package loads lazily, the module that defines it
            lazy = lazy_exports(source) if source in modules() else {}
            targets = [lazy.get(alias.name, f"{source}.{alias.name}") for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "glip" or target.startswith("glip."):
                known = _known(target)
                if known is not None and known != name:
                    found.add(known)
    return found


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(imports_of(name)) for name in modules()}


def node_of(name: str) -> str:
    """Package nodes (``glip.models``, ...); top-level modules (``glip.predictor``) are their own node."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[1] in PACKAGES:
        return ".".join(parts[:2])
    return name


def package_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for source, targets in graph().items():
        edges.setdefault(node_of(source), set())
        edges[node_of(source)] |= {node_of(t) for t in targets if node_of(t) != node_of(source)}
    return edges


def cycles(edges: dict[str, set[str]] | dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def importers(prefixes: tuple[str, ...], within: str) -> list[str]:
    """``source -> target`` for modules under ``within`` importing a module under one of ``prefixes``."""
    return sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        if source == within or source.startswith(within + ".")
        for target in targets
        if any(target == p or target.startswith(p + ".") for p in prefixes)
    )


def test_the_graph_sees_function_level_and_relative_imports():
    assert "glip.cli.main" in modules() and "glip.cli" in modules()
    assert "glip.weights.resolve" in graph()["glip.cli.detect"]  # imported inside run_detect
    assert "glip.cli.main" in graph()["glip.cli"]  # `from glip.cli.main import main`
    assert {"glip.eval.hooks"} <= graph()["glip.cli.train"]


def test_the_graph_sees_lazy_imports():
    assert {"glip.models.glip", "glip.weights.loading"} <= graph()["glip"]  # glip.__getattr__ via _EXPORTS
    assert "glip.weights.resolve" in graph()["glip.weights"]  # import_module("glip.weights.resolve")
    assert "glip.data.synthetic.vocabulary" in graph()["glip.data.synthetic"]  # relative _EXPORTS values
    assert _known("glip.data.types") is not None and lazy_exports("glip.data")["collate"] == "glip.data.types"


#: the floor of every node of ``package_graph`` (higher imports lower, never the reverse; same floor: sideways)
FLOORS: dict[str, int] = {
    **dict.fromkeys(
        (
            "glip.text",
            "glip.config",
            "glip.preprocess",
            "glip.postprocess",
            "glip.images",
            "glip.runtime",
            "glip.memory",
            "glip.visualize",
            "glip.box_coder",
            "glip.fileio",
            "glip.remote",
            "glip.version",
            "glip.lazy",
        ),
        0,
    ),
    "glip.models": 1,
    "glip.losses": 2,
    "glip.export": 2,  # the model exported to ONNX (models + pre/post-processing only); the predictor runs it
    "glip.data": 3,
    "glip.weights": 3,
    "glip.engine": 4,
    "glip.predictor": 5,
    **dict.fromkeys(
        ("glip.eval", "glip.selftrain", "glip.v2", "glip.serve", "glip.detect"),
        6,
    ),
    "glip": 7,  # the public face: only the CLI (and users) import it
    "glip.cli": 8,
}


def test_every_module_has_a_floor():
    assert sorted(set(package_graph()) - set(FLOORS)) == []


def test_no_upward_import():
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in package_graph().items()
        for target in targets
        if FLOORS.get(target, -1) > FLOORS.get(source, -1)
    )
    assert upward == []


def test_no_cycle_between_files():
    assert cycles(graph()) == []


def test_no_cycle_between_packages():
    assert cycles(package_graph()) == []


def without(edges: dict[str, set[str]], *nodes: str) -> dict[str, set[str]]:
    return {k: v - set(nodes) for k, v in edges.items() if k not in nodes}


def test_no_cycle_between_packages_besides_v2():
    assert cycles(without(package_graph(), "glip.v2")) == []


def test_the_cli_applications_and_weights_are_in_no_package_cycle():
    """What this layer owns must pass everywhere: no package cycle through cli, eval, selftrain, weights or
    the top-level detect / predictor / runtime / config modules."""
    mine = {"glip.cli", "glip.eval", "glip.selftrain", "glip.weights", "glip.detect", "glip.predictor"}
    mine |= {"glip.runtime", "glip.config", "glip"}
    assert [c for c in cycles(package_graph()) if set(c) & mine] == []


@pytest.mark.parametrize("layer", LOWER)
@pytest.mark.parametrize("application", ["glip.cli", "glip.eval"])
def test_lower_layers_import_no_cli_or_eval(layer, application):
    assert importers((application,), f"glip.{layer}") == []


@pytest.mark.parametrize(
    "layer",
    LOWER,
)
def test_lower_layers_import_no_v2(layer):
    assert importers(("glip.v2",), f"glip.{layer}") == []


def test_only_the_cli_imports_the_cli():
    outside = sorted(
        f"{source} -> {target}"
        for source, targets in graph().items()
        if node_of(source) != "glip.cli"
        for target in targets
        if node_of(target) == "glip.cli"
    )
    assert outside == []


def test_predictor_imports_no_engine():
    assert importers(("glip.engine",), "glip.predictor") == []


def test_weights_import_no_synthetic_generator():
    """The weights may use the synthetic world's vocabulary (the demo prompt), never its generator."""
    bad = []
    for name, path in modules().items():
        if not name.startswith("glip.weights"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("glip.data.synthetic")
            ):
                vocabulary = "vocab" in node.module or all(a.name.isupper() for a in node.names)
                if not vocabulary:
                    bad.append(f"{name}: from {node.module} import {', '.join(a.name for a in node.names)}")
            elif isinstance(node, ast.Import):
                bad += [
                    f"{name}: import {a.name}" for a in node.names if a.name.startswith("glip.data.synthetic")
                ]
    assert bad == []


def test_the_library_imports_no_scripts():
    """experiments/, benchmarks/ and tests/ stand outside the library: glip/ never imports them."""
    bad = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                sources = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                sources = [node.module or ""]
            else:
                continue
            bad += [
                f"{name} -> {s}" for s in sources if s.split(".")[0] in {"experiments", "benchmarks", "tests"}
            ]
    assert bad == []
