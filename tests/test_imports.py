"""The import map: ``shared/`` imports no method, a method tree imports only ``shared/``,
``nasbench_analysis/`` and itself, and no chain of imports comes back to where it started
(imports inside functions count: a lazy import hides a circle, it does not remove it; imports
under ``if TYPE_CHECKING:`` never run and do not count)."""
from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = ("shared", "sdarts", "darts_pt", "lambda_darts", "stacnas", "nasbench_analysis")
METHODS = ("sdarts", "darts_pt", "lambda_darts", "stacnas")
ALLOWED = {"shared": {"shared"}, "nasbench_analysis": {"nasbench_analysis", "shared"},
           **{m: {m, "shared", "nasbench_analysis"} for m in METHODS}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    mods = {}
    for tree in TREES:
        for dirpath, _, files in os.walk(ROOT / tree):
            for f in files:
                if f.endswith(".py"):
                    path = Path(dirpath) / f
                    mods[module_name(path)] = path
    return mods


def imported(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (anywhere in the file), resolved to the longest
    module name that exists (``from shared.search import loop`` -> shared.search.loop)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        for n in names:
            while n and n not in modules:
                n = n.rpartition(".")[0]
            if n and n != name:
                out.add(n)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imported(path, name, modules) for name, path in modules.items()}


def test_every_tree_imports_only_what_it_may() -> None:
    wrong = []
    for mod, targets in import_graph().items():
        tree = mod.split(".")[0]
        for target in targets:
            if target.split(".")[0] not in ALLOWED[tree]:
                wrong.append(f"{mod} -> {target}")
    assert not wrong, "imports across method trees:\n" + "\n".join(sorted(wrong))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle() -> None:
    graph = import_graph()
    # a package's __init__ re-exporting its own modules is not a circle of ideas
    for mod in graph:
        if (ROOT / mod.replace(".", "/") / "__init__.py").exists():
            graph[mod] = {t for t in graph[mod] if not t.startswith(mod + ".")}
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_walker_sees_a_planted_cross_import(tmp_path) -> None:
    """The checks above can fail: a method importing another is found."""
    path = ROOT / "darts_pt" / "_probe_cross_import.py"
    path.write_text("from sdarts.sota.cnn.train_search import run_dir\n")
    try:
        graph = import_graph()
        assert "sdarts.sota.cnn.train_search" in graph["darts_pt._probe_cross_import"]
        assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    finally:
        path.unlink()


def test_every_module_imports() -> None:
    """A name a module imports that no longer exists fails here, not in a user's run. In a
    fresh process, torch and torchvision first, as every door imports them (TensorFlow loaded
    before them crashes the process in this environment)."""
    import subprocess
    import sys

    names = sorted(n for n in project_modules() if not n.endswith("__main__"))
    code = ("import importlib, torch, torchvision\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


DOORS = ["sdarts/sota/cnn/train_search.py", "sdarts/sota/cnn/train.py", "sdarts/sota/cnn/test.py",
         "sdarts/sota/cnn/train_imagenet.py", "sdarts/optimizers/darts/train_search.py",
         "sdarts/sota/rnn/train_search.py", "sdarts/sota/rnn/train.py", "sdarts/sota/rnn/test.py",
         "darts_pt/sota/cnn/train_search.py", "darts_pt/sota/cnn/train.py",
         "darts_pt/nasbench201/train_search.py", "lambda_darts/sota/cnn/train_search.py",
         "lambda_darts/NAS-Bench201/exps/algos/DARTS-V1.py",
         "lambda_darts/sota/rnn/train_search.py"]


def test_door_help_imports_no_engine() -> None:
    """``--help`` (and a refused flag) answer before torch is imported: a fraction of a second
    of CPU instead of seconds. Each door in its own folder, as a user runs it."""
    import subprocess
    import sys

    probe = ("import runpy, sys\n"
             "sys.argv = [sys.argv[1], '--help']\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "heavy = sorted(m for m in ('torch', 'numpy', 'tensorflow', 'matplotlib') "
             "if m in sys.modules)\n"
             "print('HEAVY', heavy)\n")
    for door in DOORS:
        folder, script = os.path.split(ROOT / door)
        out = subprocess.run([sys.executable, "-c", probe, script], cwd=folder,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, (door, out.stderr[-2000:])
        assert "usage:" in out.stdout and os.path.basename(door) in out.stdout.split("\n")[0]
        assert "HEAVY []" in out.stdout, (door, out.stdout.splitlines()[-1])
