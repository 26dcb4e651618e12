"""The house's layers, read from the source: imports point down only, without cycles; surfaces never import each other.

Every import of an fmops_nb module counts, at the top of a module or inside a function alike (a function-local import
hides a cycle from Python, not from this test). The templates are a surface too: their code cells are read.
"""
import ast
import builtins
import functools
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fmops_nb"
LAYERS = {  # lowest first; a module may import its own layer (without cycles) and every layer below it
    "foundation": ["_grid", "errors", "postgres", "core", "progress", "tracking", "audit", "blobs", "record", "tasks", "html",
                   "data", "pii", "costs"],
    "engine": ["embeddings", "lm", "descriptors", "slices", "drift", "dask_drift", "registry", "diff", "finetune",
               "reports", "monitor", "governance", "cards", "handoff", "schedule", "demo", "demo_text", "demo_llm", "feedback", "review"],
    "commands": ["commands"],
    "surface": ["widgets", "magics", "cli", "templates"],
}
LEVEL = {m: i for i, ms in enumerate(LAYERS.values()) for m in ms}
SURFACES = set(LAYERS["surface"])
# `%load_ext fmops_nb` must stay light: the magic loads the command layer and the engines on first use; and a command
# line process loads the demos and the review panels (ipywidgets) only for the commands that use them, so that
# `fmops report run` starts fast. These are the only function-local imports of fmops_nb modules allowed (surface ->
# lower layer; they still count as edges).
LAZY_OK = {"magics", "cli"}


def _targets(node, module: str) -> list[str]:
    "The fmops_nb modules an import statement names."
    if isinstance(node, ast.ImportFrom):
        if node.level == 1:
            return [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
        if node.module and node.module.split(".")[0] == "fmops_nb":
            parts = node.module.split(".")
            return [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
    if isinstance(node, ast.Import):
        return [a.name.split(".")[1] if "." in a.name else "__init__" for a in node.names if a.name.split(".")[0] == "fmops_nb"]
    return []


def _imports(tree, module: str) -> list[tuple[str, int, bool]]:
    "(target, line, function-local) for every fmops_nb import in `tree`."
    out = []
    def walk(node, local):
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for t in _targets(child, module):
                out.append((t, child.lineno, local))
            walk(child, inner)
    walk(tree, False)
    return out


@functools.lru_cache(maxsize=1)
def module_graph() -> dict:
    "module -> [(target, line, local)], from the package's source and the templates' code cells."
    g = {}
    for p in sorted(PKG.glob("*.py")):
        if p.stem in ("_modidx", "__init__"):
            continue
        g[p.stem] = [e for e in _imports(ast.parse(p.read_text()), p.stem) if e[0] != p.stem]
    edges = []
    for nb in sorted((ROOT / "templates").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":
                code = "".join(cell["source"])
                code = "\n".join(l for l in code.splitlines() if not l.lstrip().startswith(("%", "!")))
                edges += _imports(ast.parse(code), "templates")
    g["templates"] = edges
    return g


def cycles(g: dict) -> list[list[str]]:
    "Every cycle found by a depth-first search (each reported once, from its first module in the search)."
    found, state = [], {}
    def visit(m, path):
        state[m] = "open"
        for t, _, _ in g.get(m, []):
            if state.get(t) == "open":
                found.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"
    for m in g:
        if m not in state:
            visit(m, [m])
    return found


def test_every_module_has_a_layer():
    "Python modules and compiled ones (fmops_nb/_grid.c, the drift engine's loop) alike."
    modules = {p.stem for p in [*PKG.glob("*.py"), *PKG.glob("*.c")]} - {"_modidx", "__init__"}
    assert modules - set(LEVEL) == set(), "a new module needs a layer in tests/test_layers.py (and in the README)"
    assert set(LEVEL) - modules - {"templates"} == set(), "a layer names a module that no longer exists"


def test_the_module_graph_has_no_cycle():
    g = module_graph()
    assert cycles(g) == []


def test_imports_point_down_only_and_surfaces_never_import_each_other():
    bad = []
    for m, edges in module_graph().items():
        for t, line, local in edges:
            if t not in LEVEL:
                bad.append(f"{m}:{line} imports fmops_nb.{t}, which has no layer")
            elif LEVEL[t] > LEVEL[m]:
                bad.append(f"{m}:{line} ({list(LAYERS)[LEVEL[m]]}) imports {t} ({list(LAYERS)[LEVEL[t]]}), a layer above it")
            elif m in SURFACES and t in SURFACES:
                bad.append(f"{m}:{line} imports the surface {t}: surfaces share code through the commands layer")
    assert bad == []


def test_internal_imports_sit_at_the_top_except_the_magics_first_use():
    local = [f"{m}:{line} imports {t} inside a function" for m, edges in module_graph().items() if m != "templates"
             for t, line, is_local in edges if is_local and m not in LAZY_OK]
    assert local == []


def test_a_patched_method_never_shadows_a_name_of_its_module():
    "`@patch def load(self:Registry)` also binds `load` in the module: it must not hide an import, a builtin or a def."
    bad = []
    for p in sorted(PKG.glob("*.py")):
        if p.stem == "_modidx":
            continue
        tree = ast.parse(p.read_text())
        patched, others = [], set()
        for n in tree.body:
            decos = [d.func if isinstance(d, ast.Call) else d for d in getattr(n, "decorator_list", [])]
            if isinstance(n, ast.FunctionDef) and any(getattr(d, "id", None) == "patch" for d in decos):
                patched.append(n.name)
            elif isinstance(n, (ast.FunctionDef, ast.ClassDef)):
                others.add(n.name)
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                others |= {(a.asname or a.name).split(".")[0] for a in n.names}
        loads = {x.id for x in ast.walk(tree) if isinstance(x, ast.Name) and isinstance(x.ctx, ast.Load)}
        for name in patched:
            if name in dir(builtins) or name in others or name in loads or patched.count(name) > 1:
                bad.append(f"{p.stem}: @patch {name}")
    assert bad == []


@pytest.mark.parametrize("edge, found", [([("a", "b"), ("b", "c"), ("c", "a")], True), ([("a", "b"), ("a", "c"), ("b", "c")], False)])
def test_the_cycle_check_finds_a_cycle(edge, found):
    g = {}
    for a, b in edge:
        g.setdefault(a, []).append((b, 1, False))
    assert bool(cycles(g)) is found


def test_lines_of_the_package_are_at_most_120_characters():
    """Lines at most 120 characters in fmops_nb/ (`_modidx.py` aside). nbdev wraps `__all__` at 120 before it prefixes
    `__all__ = `, so that one generated line may reach 130."""
    long = []
    for p in sorted(PKG.glob("*.py")):
        if p.stem == "_modidx":
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            limit = 130 if line.startswith("__all__ = [") else 120
            if len(line) > limit:
                long.append(f"{p.name}:{i} ({len(line)} characters)")
    assert long == []
