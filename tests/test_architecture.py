"""The package's shape, as CONTRIBUTING.md draws it: layers that import one way (import-linter's
contract in pyproject.toml), no import cycle at any depth, no private name used across modules, and
a top level that reads as a table of contents."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "fer_utils"
MAX_TOP_LEVEL = 16


@pytest.fixture(scope="module")
def graph():
    """Every import between fer_utils modules, those inside functions and under TYPE_CHECKING too."""
    return grimp.build_graph("fer_utils", cache_dir=None)


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each a cycle or several."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(start: str) -> None:   # iterative: the graph is deep enough to matter for recursion
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle():
    """The check below can fail: a made-up graph with a three-module cycle and a clean branch."""
    fake = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.e", "p.d")]:
        fake.add_import(importer=importer, imported=imported)
    assert _cycles(fake) == [["p.a", "p.b", "p.c"]]


def test_no_import_cycle_among_fer_utils_modules(graph):
    assert _cycles(graph) == []


def test_the_layers_import_one_way():
    """import-linter's contract in pyproject.toml ([tool.importlinter]): it prints the broken chains."""
    assert lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True) == 0


def _private_uses(path: Path, root: Path = REPO) -> list[str]:
    """``from fer_utils.x import _name`` and ``alias._name`` on a fer_utils module in ``path``
    (named relative to ``root``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fer_utils"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: imports {node.module}.{alias.name}")
                if (PACKAGE.parent / (node.module.replace(".", "/") + f"/{alias.name}.py")).exists():
                    modules.add(alias.asname or alias.name)   # a module imported by name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fer_utils") and alias.asname:
                    modules.add(alias.asname)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.relative_to(root)}:{node.lineno}: uses {node.value.id}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module_boundary(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from fer_utils.training import train\nfrom fer_utils.cache import _KEY\ntrain._secret()\n")
    assert len(_private_uses(sample, tmp_path)) == 2   # the scanner itself, on a sample that breaks the rule twice
    files = [*PACKAGE.rglob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    assert [use for path in files for use in _private_uses(path)] == []


def test_the_top_level_reads_as_a_table_of_contents():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__" and not p.name.endswith(".egg-info"))
    assert len(entries) <= MAX_TOP_LEVEL, entries
    for folder in (p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        init = folder / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), \
            f"{folder.name}/ needs an __init__.py whose docstring says what is inside"


def test_fer_help_and_study_check_import_no_torch(tmp_path):
    """`fer --help` and `fer study check` (here on a project with nothing run yet: it names what is
    missing) answer without loading torch, which takes seconds to import."""
    (tmp_path / "notebooks").mkdir()
    shutil.copy(REPO / "notebooks" / "study.yaml", tmp_path / "notebooks" / "study.yaml")
    code = ("import sys; from click.testing import CliRunner; from fer_utils.cli import main; "
            "assert CliRunner().invoke(main, ['--help']).exit_code == 0; "
            "res = CliRunner().invoke(main, ['study', 'check', '--profile', 'default']); "
            "assert res.exit_code == 1 and 'no executed notebook' in res.output, res.output; "
            "heavy = sorted(m for m in ('torch', 'torchvision') if m in sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=tmp_path,
                   env={**os.environ, "FER_HOME": str(tmp_path)})
