"""The layers point one way: no two modules import each other, directly or in a loop, and each
layer imports only what the design lets it (docs: metadata knows nothing of FUSE, trio, HTTP or
object stores; the chunk store knows nothing of commits; the scheduler and the mount talk to the
store only through the client API).

Imports are read with `ast` from the four source roots, wherever they are: at the top of a module,
inside a function (a deferred import is still a dependency) and under `if TYPE_CHECKING:` (a
type-only import still ties two modules together, so it counts too). Importing `a.b.c` also runs
the `__init__.py` of `a.b`, so a module depends on the packages above what it imports, except on
its own (they are already running when it loads). Imports done by name at run time
(`importlib.import_module`, as the object-store registry does) are not dependencies: that is how
a lower layer is handed something it must not import.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = [REPO / name for name in ("pfsfuse", "metadata", "scheduler", "tools")]

FUSE = ("pyfuse3", "pfsfuse.mount")
HTTP = ("httpx", "h11", "starlette", "hypercorn")
OBJECT_STORES = ("pfsfuse.chunks", "boto3", "botocore", "google", "azure")
# The file engine and everything that opens it: only the daemon's process runs them.
SERVER_SIDE = (
    "pfsfuse.store",
    "pfsfuse.engine",
    "pfsfuse.gc",
    "pfsfuse.fsck",
    "pfsfuse.dump",
    "pfsfuse.api.server",
    "pfsfuse.daemon",
)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # a module of the roots, or the top-level name of any other
    line: int
    type_only: bool


@dataclass(frozen=True)
class Rule:
    """Modules under `importers` import nothing under `forbidden` but what is under `allowed`;
    with `transitive`, not even through other modules."""

    why: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    transitive: bool = False


RULES = [
    Rule(
        "metadata is synchronous and knows nothing of FUSE, trio, HTTP, object stores or what is above it",
        importers=("pfsfuse.metadata",),
        forbidden=("pfsfuse", "trio", *FUSE, *HTTP, *OBJECT_STORES),
        allowed=("pfsfuse.metadata",),
    ),
    Rule(
        "the chunk store knows nothing of commits, trees or anything above it",
        importers=("pfsfuse.chunks",),
        forbidden=("pfsfuse",),
        allowed=("pfsfuse.chunks",),
    ),
    Rule(
        "the file engine knows nothing of FUSE, trio, the scheduler, the CLI or the server around it",
        importers=("pfsfuse.engine", "pfsfuse.store", "pfsfuse.gc", "pfsfuse.fsck", "pfsfuse.dump"),
        forbidden=("trio", *FUSE, "pfsfuse.scheduler", "pfsfuse.tools", "pfsfuse.api.server", "pfsfuse.daemon"),
    ),
    Rule(
        "the scheduler and the mount talk to the store only through the client API",
        importers=("pfsfuse.scheduler", "pfsfuse.mount"),
        forbidden=SERVER_SIDE,
        transitive=True,
    ),
    Rule(
        "a mount is a client: the index is the daemon's",
        importers=("pfsfuse.mount",),
        forbidden=("pfsfuse.metadata.db", "pfsfuse.metadata.index", "pfsfuse.scheduler"),
    ),
    Rule(
        "the client API runs in every client: it knows nothing of the server side or of its users",
        importers=("pfsfuse.api.client", "pfsfuse.api.types", "pfsfuse.api.connect"),
        forbidden=(*SERVER_SIDE, "pfsfuse.mount", "pfsfuse.scheduler", "pfsfuse.tools"),
        transitive=True,
    ),
    Rule(
        "the command line is the top: nothing below it imports it",
        importers=("pfsfuse",),
        forbidden=("pfsfuse.tools",),
        allowed=("pfsfuse.tools",),
    ),
    Rule(
        "the web console is a client: it reaches the store only through the API, with the user's token",
        importers=("pfsfuse.console",),
        forbidden=(*SERVER_SIDE, "pfsfuse.metadata.db", "pfsfuse.metadata.index", "pfsfuse.auth", "pfsfuse.tools"),
    ),
]


# -- the checker ----------------------------------------------------------------------------------


def find_modules(roots: Iterable[Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every module under the source roots."""
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST, type_only: bool = False):
    """Every import statement in `tree`, nested ones too, and whether it runs only for type
    checkers."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, type_only
        elif isinstance(node, ast.If) and _type_checking(node.test):
            for part in node.body:
                yield from _statements(ast.Module(body=[part], type_ignores=[]), True)
            for part in node.orelse:
                yield from _statements(ast.Module(body=[part], type_ignores=[]), type_only)
        else:
            yield from _statements(node, type_only)


def _named(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement asks for, relative ones resolved."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    # `from a import b`: b is a submodule or a name in a; both depend on a.
    return [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]


def find_imports(modules: dict[str, Path]) -> list[Import]:
    found = []
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node, type_only in _statements(ast.parse(path.read_text(), str(path))):
            targets = set()
            for name in _named(node, module, is_package):
                parts = name.split(".")
                prefixes = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
                known = [p for p in prefixes if p in modules]
                if not known:  # outside the roots, or a namespace package of them
                    if parts[0] != "pfsfuse":
                        targets.add(parts[0])
                    continue
                # The module itself and the packages whose __init__ importing it runs.
                targets.update(t for t in known if not _within(module, t))
            found += [Import(module, t, node.lineno, type_only) for t in sorted(targets)]
    return found


def graph(imports: Iterable[Import], modules: dict[str, Path]) -> dict[str, dict[str, Import]]:
    """Module -> the modules of the roots it imports (with one import statement for each)."""
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for imp in imports:
        if imp.target in modules and imp.target != imp.source:
            edges[imp.source].setdefault(imp.target, imp)
    return edges


def find_cycles(edges: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """One cycle through each group of modules that import each other (Tarjan's strongly
    connected components, then a shortest loop inside each)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(start: str) -> None:  # iterative: deep import chains must not hit the recursion limit
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(edges[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    group = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        group.add(w)
                        if w == v:
                            break
                    if len(group) > 1:
                        groups.append(group)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = []
    for group in groups:
        start = min(group)
        paths = {start: []}
        frontier = [start]
        while frontier and start not in {w for v in frontier for w in edges[v]}:
            nxt = []
            for v in frontier:
                for w, imp in sorted(edges[v].items()):
                    if w in group and w not in paths:
                        paths[w] = paths[v] + [imp]
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in edges[v])
        cycles.append(paths[last] + [edges[last][start]])
    return cycles


def reachable(edges: dict[str, dict[str, Import]], module: str) -> dict[str, list[Import]]:
    """Every module `module` imports, directly or not, with a chain of imports that gets there."""
    chains = {module: []}
    frontier = [module]
    while frontier:
        nxt = []
        for v in frontier:
            for w, imp in edges[v].items():
                if w not in chains:
                    chains[w] = chains[v] + [imp]
                    nxt.append(w)
        frontier = nxt
    return chains


def violations(rules: Iterable[Rule], imports: list[Import], modules: dict[str, Path]) -> list[str]:
    edges = graph(imports, modules)
    found = []
    for rule in rules:
        for module in sorted(modules):
            if not any(_within(module, p) for p in rule.importers):
                continue
            if rule.transitive:
                chains = reachable(edges, module)
                targets = [(t, chain) for t, chain in sorted(chains.items()) if t != module]
            else:
                targets = [(i.target, [i]) for i in imports if i.source == module]
            for target, chain in targets:
                bad = any(_within(target, p) for p in rule.forbidden)
                if bad and not any(_within(target, p) for p in rule.allowed):
                    found.append(f"{_show(chain)}: {rule.why}")
    return found


def _show(chain: list[Import]) -> str:
    return " -> ".join([chain[0].source] + [f"{i.target} (line {i.line})" for i in chain])


def check(roots: Iterable[Path], rules: Iterable[Rule] = ()) -> list[str]:
    """Everything wrong with the imports under `roots`, one line each."""
    modules = find_modules(roots)
    imports = find_imports(modules)
    problems = [f"import cycle: {_show(c)}" for c in find_cycles(graph(imports, modules))]
    return problems + violations(rules, imports, modules)


# -- the tests ------------------------------------------------------------------------------------


def test_no_module_imports_another_that_imports_it_back():
    problems = check(ROOTS)
    assert not problems, "\n".join(problems)


def test_the_layers_point_one_way():
    problems = check(ROOTS, RULES)
    assert not problems, "\n".join(problems)


def test_the_rules_name_modules_that_exist():
    """A rule about a module renamed away would pass forever."""
    modules = find_modules(ROOTS)
    for rule in RULES:
        for prefix in (*rule.importers, *rule.forbidden, *rule.allowed):
            if prefix.startswith("pfsfuse"):
                assert any(_within(m, prefix) for m in modules), f"{prefix} ({rule.why})"


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        pytest.param(
            {"pfsfuse/a.py": "from pfsfuse import b\n", "pfsfuse/b.py": "import pfsfuse.a\n"},
            "pfsfuse.a -> pfsfuse.b (line 1) -> pfsfuse.a (line 1)",
            id="direct",
        ),
        pytest.param(
            {
                "pfsfuse/p/__init__.py": "",
                "pfsfuse/p/a.py": "from .b import f\n",
                "pfsfuse/p/b.py": "def f():\n    from pfsfuse.p.c import g\n",
                "pfsfuse/p/c.py": "from . import a\n",
            },
            "pfsfuse.p.a -> pfsfuse.p.b (line 1) -> pfsfuse.p.c (line 2) -> pfsfuse.p.a (line 1)",
            id="a loop, one import inside a function",
        ),
        pytest.param(
            {
                "pfsfuse/a.py": """\
                    from typing import TYPE_CHECKING
                    if TYPE_CHECKING:
                        from pfsfuse.b import B
                """,
                "pfsfuse/b.py": "from pfsfuse.a import A\n",
            },
            "pfsfuse.a -> pfsfuse.b (line 3) -> pfsfuse.a (line 1)",
            id="type checking only",
        ),
        pytest.param(
            {
                "pfsfuse/p/__init__.py": "from pfsfuse.x import X\n",
                "pfsfuse/p/q.py": "",
                "pfsfuse/x.py": "from pfsfuse.p.q import Q\n",
            },
            "pfsfuse.p -> pfsfuse.x (line 1) -> pfsfuse.p (line 1)",
            id="through the package a submodule is in",
        ),
    ],
)
def test_the_checker_finds_cycles(tmp_path, files, cycle):
    root = write_package(tmp_path, files)
    assert check([root]) == [f"import cycle: {cycle}"]


def test_the_checker_allows_what_is_no_cycle(tmp_path):
    root = write_package(
        tmp_path,
        {
            "pfsfuse/p/__init__.py": "from .a import A\n",  # a package exporting its modules
            "pfsfuse/p/a.py": "from pfsfuse.p.b import B\nA = B\n",
            "pfsfuse/p/b.py": "import importlib\nB = importlib.import_module('pfsfuse.p.a')\n",
            "pfsfuse/q.py": "from pfsfuse.p import A\n",
        },
    )
    assert check([root]) == []


def test_the_checker_finds_layer_violations(tmp_path):
    root = write_package(
        tmp_path,
        {
            "pfsfuse/metadata/__init__.py": "",
            "pfsfuse/metadata/tree.py": "import trio\nfrom pfsfuse.metadata import names\n",
            "pfsfuse/metadata/names.py": "",
            "pfsfuse/mount/__init__.py": "",
            "pfsfuse/mount/fs.py": "from pfsfuse.api import client\n",
            "pfsfuse/api/__init__.py": "",
            "pfsfuse/api/client.py": "def open():\n    from pfsfuse.store import Store\n",
            "pfsfuse/store.py": "",
        },
    )
    assert check([root], RULES) == [
        "pfsfuse.metadata.tree -> trio (line 1): " + RULES[0].why,
        "pfsfuse.mount.fs -> pfsfuse.api.client (line 1) -> pfsfuse.store (line 2): " + RULES[3].why,
        "pfsfuse.api.client -> pfsfuse.store (line 2): " + RULES[5].why,
    ]
