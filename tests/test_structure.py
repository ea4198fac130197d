"""The package's structure (issue 23): no import cycles, no private names imported across modules, medclass imports
inside functions only where listed below with a reason, and no source file over 600 lines.

The checks read the source with :mod:`ast` (nothing is imported). An import is an edge from the importing module
to the module it names: ``from medclass.x import y`` goes to ``medclass.x.y`` when that is a module, else to
``medclass.x``; importing ``medclass.a.b`` also runs ``medclass/a/__init__.py`` (an edge to ``medclass.a`` too, unless
the importer is inside ``medclass.a``, whose ``__init__`` is then already running). Imports under
``if TYPE_CHECKING:`` are left out; imports inside functions count (a cycle hidden in a function is still a cycle).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "medclass"
MAX_LINES = 600

#: medclass imports allowed inside functions: ``(importing module, imported module or "*")`` -> why.
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("medclass.cli", "*"): "the console entry point imports a subcommand's modules (torch, MONAI, the label app) "
    "only when that subcommand runs, so `medclass --help` and a mistyped option answer at once",
}


@dataclass(frozen=True)
class Import:
    """One imported name (or module) of a medclass module."""

    module: str  # the importing module
    target: str  # the module imported (the submodule when the name is one)
    name: str | None  # ``from ... import name``; None for ``import x``
    line: int
    in_function: bool


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the package (packages by their ``__init__``)."""
    out = {}
    for f in sorted((root / PACKAGE).rglob("*.py")):
        parts = f.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


class _Visitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: dict[str, Path]) -> None:
        self.module, self.is_package, self.modules = module, is_package, modules
        self.depth = 0
        self.found: list[Import] = []
        self.module_aliases: dict[str, str] = {}  # local name -> medclass module it is bound to
        self.attributes: list[tuple[str, str, int]] = []  # (local name, attribute, line)

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        test = ast.unparse(node.test)
        if test in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):  # annotations only: never runs
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _base(self, level: int, module: str | None) -> str:
        parts = self.module.split(".")
        if not self.is_package:
            parts = parts[:-1]
        parts = parts[: len(parts) - (level - 1)]
        return ".".join(parts + ([module] if module else []))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE:
                self.found.append(Import(self.module, alias.name, None, node.lineno, self.depth > 0))
                if alias.asname:
                    self.module_aliases[alias.asname] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        target = self._base(node.level, node.module) if node.level else (node.module or "")
        if target.split(".")[0] != PACKAGE:
            return
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            is_module = sub in self.modules
            self.found.append(Import(self.module, sub if is_module else target, alias.name, node.lineno,
                                     self.depth > 0))
            if is_module:
                self.module_aliases[alias.asname or alias.name] = sub

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name):
            self.attributes.append((node.value.id, node.attr, node.lineno))
        self.generic_visit(node)


@dataclass
class Package:
    modules: dict[str, Path]
    imports: list[Import]
    private: list[str]  # "file:line module <- target.name"

    @classmethod
    def read(cls, root: Path = ROOT) -> Package:
        modules = module_files(root)
        imports: list[Import] = []
        private: list[str] = []
        for name, path in modules.items():
            v = _Visitor(name, path.name == "__init__.py", modules)
            v.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
            imports += v.found
            where = path.relative_to(root)
            for imp in v.found:
                if imp.name and _is_private(imp.name) and imp.target != name and f"{imp.target}.{imp.name}" not in modules:
                    private.append(f"{where}:{imp.line} {name} <- {imp.target}.{imp.name}")
            for local, attr, line in v.attributes:
                target = v.module_aliases.get(local)
                if target and target != name and _is_private(attr):
                    private.append(f"{where}:{line} {name} <- {target}.{attr}")
        return cls(modules, imports, private)

    def graph(self) -> dict[str, set[str]]:
        """Module -> the modules importing it runs (see the module docstring)."""
        edges: dict[str, set[str]] = {m: set() for m in self.modules}
        for imp in self.imports:
            if imp.target not in self.modules:
                continue
            parts = imp.target.split(".")
            for k in range(1, len(parts) + 1):
                dst = ".".join(parts[:k])
                inside = imp.module == dst or imp.module.startswith(dst + ".")
                if dst in self.modules and dst != imp.module and (k == len(parts) or not inside):
                    edges[imp.module].add(dst)
        return edges

    def lazy(self) -> list[Import]:
        return [imp for imp in self.imports if imp.in_function]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative Tarjan (no recursion limit)
        nonlocal counter
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found, key=lambda c: (-len(c), c))


def unlisted_lazy_imports(package: Package) -> list[str]:
    out = []
    for imp in package.lazy():
        if (imp.module, "*") in LAZY_IMPORTS or (imp.module, imp.target) in LAZY_IMPORTS:
            continue
        where = package.modules[imp.module].relative_to(ROOT)
        named = imp.name and not imp.target.endswith("." + imp.name)
        out.append(f"{where}:{imp.line} {imp.module} -> {imp.target}{'.' + imp.name if named else ''}")
    return out


def long_files(package: Package, limit: int = MAX_LINES) -> list[str]:
    out = []
    for path in package.modules.values():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append(f"{path.relative_to(ROOT)}: {n} lines")
    return sorted(out)


@pytest.fixture(scope="module")
def package() -> Package:
    return Package.read()


def test_no_import_cycle(package):
    found = cycles(package.graph())
    assert not found, f"{len(found)} import cycle(s) in medclass (each a group of modules importing each other): " \
                      + "; ".join(" <-> ".join(c) for c in found)


def test_no_two_module_cycle_even_through_package_inits(package):
    """The same, spelled out for the shortest cycles: a module and one it imports, importing it back."""
    edges = package.graph()
    pairs = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in edges.get(b, ())})
    assert not pairs, f"modules importing each other: {pairs}"


def test_no_private_name_imported_from_another_module(package):
    assert not package.private, f"{len(package.private)} private name(s) used across modules: " \
                                + "; ".join(package.private)


def test_medclass_imports_inside_functions_are_listed(package):
    found = unlisted_lazy_imports(package)
    assert not found, (f"{len(found)} medclass import(s) inside functions; import at module level, or add the "
                       f"case to LAZY_IMPORTS with its reason: " + "; ".join(found))


def test_lazy_import_allowlist_has_no_stale_entries(package):
    used = {(imp.module, "*") for imp in package.lazy()} | {(imp.module, imp.target) for imp in package.lazy()}
    stale = sorted(set(LAZY_IMPORTS) - used)
    assert not stale, f"LAZY_IMPORTS entries that match no import: {stale}"


def test_no_source_file_over_600_lines(package):
    found = long_files(package)
    assert not found, f"files over {MAX_LINES} lines: {found}"


# ------------------------------------------------------------------------------------------- the checker itself
def _tree(tmp_path: Path, files: dict[str, str]) -> Package:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return Package.read(tmp_path)


def test_checker_finds_long_cycles_private_names_and_lazy_imports(tmp_path):
    pkg = _tree(tmp_path, {
        "medclass/__init__.py": "",
        "medclass/a.py": "from medclass.b import thing\n",
        "medclass/b.py": "from medclass import c\nc._hidden()\n",
        "medclass/c.py": "def f():\n    from medclass.a import _secret\n",
        "medclass/sub/__init__.py": "from medclass.sub.x import y\n",
        "medclass/sub/x.py": "from medclass.d import z\n",
        "medclass/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from medclass.c import q\n"
                         "from medclass.sub import y\n",
    })
    found = cycles(pkg.graph())
    assert ["medclass.a", "medclass.b", "medclass.c"] in found  # a 3-module cycle through a function
    assert ["medclass.d", "medclass.sub", "medclass.sub.x"] in found  # through a package __init__
    assert len(found) == 2  # the TYPE_CHECKING import of d makes no edge
    assert sorted(p.split(" ", 1)[1] for p in pkg.private) == ["medclass.b <- medclass.c._hidden",
                                                                 "medclass.c <- medclass.a._secret"]
    assert [i.target for i in pkg.lazy()] == ["medclass.a"]
