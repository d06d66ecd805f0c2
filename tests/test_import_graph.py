"""No import cycle between the project's modules (rebel, baselines, eval), leaves that stay leaves, and a
CLI that imports no stage's code before it knows the stage.

The graph is read from the source (AST), not from ``sys.modules``, so it sees every import
statement wherever it stands: at the top, inside a function (a lazy import hides a cycle, it
does not remove it) and under ``if TYPE_CHECKING:``. Edges:

- ``import a.b.c`` and ``from a.b.c import name``: to ``a.b.c``; ``from a.b import c`` when
  ``a/b/c.py`` (or ``a/b/c/``) exists: to the submodule ``a.b.c`` instead;
- to every parent package ``a``, ``a.b`` on the way whose ``__init__.py`` has content (more than a
  docstring): Python runs it first; an empty one cannot take part in a cycle;
- ``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a literal name: to ``a.b``.

Registry strings (``"baselines.dpo:DPO"``, resolved by :func:`rebel.algorithms.resolve_algorithm`
when a run names the algorithm) are plugin look-ups, not edges.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO

PACKAGES = ("rebel", "baselines", "eval")
LEAVES = ("rebel.errors", "eval.judge_prompts")
"""Modules that import nothing of the project, so that any module may import them."""


def project_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file under ``packages`` (a package's
    ``__init__.py`` is the package's own name)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _has_content(path: Path) -> bool:
    """Whether a package ``__init__.py`` holds more than a docstring and ``from __future__`` imports."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str))
        and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
        for node in body
    )


def imported_names(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The dotted names ``name`` (at ``path``) imports, as direct targets (see the module docstring;
    parent packages are added by :func:`import_graph`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..a import y
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            submodules = {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
            targets.update(submodules)
            if len(submodules) < len(node.names):  # some names are attributes of ``base`` itself
                targets.add(base)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                isinstance(node.func, ast.Name)
                and node.func.id == "__import__"
                or isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
            )
        ):
            targets.add(node.args[0].value)
    return targets


def _parents(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its source), without self-edges."""
    modules = project_modules(root, packages)
    with_content = {m for m, p in modules.items() if p.name == "__init__.py" and _has_content(p)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for target in imported_names(name, path, modules):
            if target in modules:
                edges.add(target)
            edges.update(parent for parent in _parents(target) if parent in with_content)
        graph[name] = edges - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm (the graph has tens of nodes)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the smallest-named module of ``component`` (breadth-first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & component):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def _describe(cycles: list[list[str]]) -> str:
    return "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_there_is_no_import_cycle_between_the_project_modules():
    cycles = find_cycles(import_graph(REPO))
    assert not cycles, f"import cycles (lazy imports included):\n{_describe(cycles)}"


def test_the_graph_sees_the_projects_lazy_imports():
    """The check is not vacuous: imports inside functions and of submodules by ``from pkg import mod``
    are edges of the real graph."""
    graph = import_graph(REPO)
    assert {"rebel.cli", "rebel.errors", "rebel.config"} <= set(graph)
    assert "rebel.loop" in graph["rebel.cli"]  # inside the train stage's handler
    assert "eval.evaluate" in graph["eval.chat_data"]  # inside a function
    assert "eval.judge_server" in graph["eval.judges"]
    assert "eval.figures" in graph["rebel.cli"]  # from eval import figures
    assert "rebel.algorithms" in graph["baselines.dpo"]  # parent package with content


@pytest.mark.parametrize("leaf", LEAVES)
def test_leaf_modules_import_nothing_of_the_project(leaf):
    graph = import_graph(REPO)
    assert leaf in graph, f"{leaf} is missing"
    assert graph[leaf] == set(), f"{leaf} imports {sorted(graph[leaf])}"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))


def test_the_graph_counts_lazy_type_checking_relative_and_submodule_imports(tmp_path):
    _write(
        tmp_path,
        {
            "p/__init__.py": '"""Only a docstring."""\nfrom __future__ import annotations\n',
            "p/a.py": "def f():\n    from p import b\n    return b\n",
            "p/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.c import C\n",
            "p/c.py": "from .sub import thing\nclass C: ...\n",
            "p/sub/__init__.py": "from p.sub.impl import thing\n",
            "p/sub/impl.py": (
                "import importlib\n\ndef load():\n    return importlib.import_module('p.a')\n\nthing = 1\n"
            ),
            "p/d.py": "import p.sub.impl\nimport os\n",
        },
    )
    graph = import_graph(tmp_path, ("p",))
    assert graph == {
        "p": set(),
        "p.a": {"p.b"},
        "p.b": {"p.c"},
        "p.c": {"p.sub"},
        "p.sub": {"p.sub.impl"},
        "p.sub.impl": {"p.a"},
        "p.d": {"p.sub", "p.sub.impl"},
    }
    assert find_cycles(graph) == [["p.a", "p.b", "p.c", "p.sub", "p.sub.impl", "p.a"]]


def test_find_cycles_reports_each_cycle_once_and_none_in_a_tree():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c", "a"}}) == [["a", "b", "a"], ["c", "d", "c"]]


def test_the_cli_imports_no_stage_code_or_torch_until_it_runs_a_stage():
    """``python -m rebel --help`` and config errors need neither torch nor any stage's module."""
    code = (
        "import sys, rebel.cli\n"
        "heavy = sorted(m for m in sys.modules if m in {'torch', 'transformers'} or m.startswith('eval')\n"
        "               or m in {'rebel.loop', 'rebel.models', 'rebel.algorithms'})\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_stage_of_the_cli_has_a_handler():
    from rebel.cli import STAGES, _parser

    parser = _parser()
    (subparsers,) = [a for a in parser._actions if a.dest == "stage"]
    assert set(subparsers.choices) == set(STAGES)
