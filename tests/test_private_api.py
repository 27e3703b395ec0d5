"""Every dependency through its public API: an AST scan of our code (everything outside ``tests/``
and the virtualenv) that fails on

- an import of a ``_private`` module or name from a package that is not ours
  (``from psycopg._queries import ...``, ``from mcp_server.djangomcp import _ToolsetMethodCaller``);
- a read or write of an ``_attribute`` (``obj._x``, ``getattr(obj, "_x")``, ``setattr``...) that is
  not ours: allowed are dunders, Django's documented ``_meta``, ``self._x``/``cls._x``, attributes of
  names bound to our own modules and classes, and underscore names our code defines somewhere
  (a ``def _x``, a ``class _X``, an assignment to ``_x`` or ``something._x``), which keeps the rule
  simple and strict: a library's private attribute is one our code never defines;
- monkeypatching: assigning to (or ``setattr`` on, or ``delattr`` of) an attribute of a module or
  class imported from a package that is not ours, or using ``unittest.mock.patch`` outside tests.

Nothing is skip-listed. The same findings as ``../shared/tools/private_api_scan.py``, decided.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {"tests", ".venv", "venv", "node_modules", "var", ".git", "test-artifacts", "__pycache__", "static"}
# Django's documented Model._meta API; namedtuple's documented methods (underscored to avoid field names).
ALLOWED_ATTRS = {"_meta", "_replace", "_asdict", "_fields", "_make", "_field_defaults"}
# ``django.conf.settings``: assigning a setting is configuration, not a patch of library code.
CONFIGURATION_OBJECTS = {"settings"}


def _our_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if not (set(p.relative_to(ROOT).parts[:-1]) & SKIP_DIRS))


def _our_top_names(path: Path | None = None) -> set[str]:
    """Top-level importable names that are ours: packages and modules at the repository root, and,
    for a script in a directory that is not a package (``bench/``), the modules beside it (it runs
    with its own directory on ``sys.path``: ``from _common import ...``)."""
    names = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in SKIP_DIRS}
    names |= {p.stem for p in ROOT.glob("*.py")}
    if path is not None and path.parent != ROOT and not (path.parent / "__init__.py").exists():
        names |= {p.stem for p in path.parent.glob("*.py")}
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name not in ALLOWED_ATTRS


def _defined_private_names(trees: dict[Path, ast.AST]) -> set[str]:
    """Underscore names our code defines as something reachable by attribute: functions, classes,
    module- and class-level assignments, and ``self._x``/``cls._x`` attributes (not local variables)."""
    names: set[str] = set()

    def targets(stmt) -> list[ast.AST]:
        if isinstance(stmt, ast.Assign):
            return stmt.targets
        if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            return [stmt.target]
        return []

    for tree in trees.values():
        scopes = [tree] + [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        for scope in scopes:
            for stmt in scope.body:
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(stmt.name)
                for target in targets(stmt):
                    for node in ast.walk(target):
                        if isinstance(node, ast.Name):
                            names.add(node.id)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                names.add(node.attr)
    return {n for n in names if _private(n)}


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: Path, ours: set[str], defined: set[str]):
        self.path, self.ours, self.defined = path, ours, defined
        self.external: set[str] = set()  # local names bound to third-party modules/objects
        self.findings: list[str] = []

    def _is_ours(self, module: str | None, level: int = 0) -> bool:
        return level > 0 or (module or "").split(".")[0] in self.ours

    def flag(self, node, what: str) -> None:
        self.findings.append(f"{self.path.relative_to(ROOT)}:{node.lineno}: {what}")

    def visit_Import(self, node):
        for alias in node.names:
            if self._is_ours(alias.name):
                continue
            if any(_private(part) for part in alias.name.split(".")):
                self.flag(node, f"import of private module {alias.name}")
            self.external.add((alias.asname or alias.name).split(".")[0])
        self.generic_visit(node)

    def visit_ImportFrom(self, node):
        if node.module == "__future__" or self._is_ours(node.module, node.level):
            return
        if any(_private(part) for part in (node.module or "").split(".")):
            self.flag(node, f"import from private module {node.module}")
        for alias in node.names:
            if _private(alias.name):
                self.flag(node, f"import of private name {alias.name} from {node.module}")
            self.external.add(alias.asname or alias.name)
        if node.module in ("unittest.mock", "mock") and any(a.name == "patch" for a in node.names):
            self.flag(node, "mock.patch outside tests (monkeypatching)")

    def _attr_allowed(self, base: ast.AST, attr: str) -> bool:
        if not _private(attr):
            return True
        if isinstance(base, ast.Name) and (base.id in ("self", "cls") or base.id not in self.external and attr in self.defined):
            return True
        return attr in self.defined and not (isinstance(base, ast.Name) and base.id in self.external)

    def visit_Attribute(self, node):
        if not self._attr_allowed(node.value, node.attr):
            self.flag(node, f"private attribute .{node.attr} of a third-party object")
        if isinstance(node.ctx, (ast.Store, ast.Del)) and isinstance(node.value, ast.Name) and \
                node.value.id in self.external and node.value.id not in CONFIGURATION_OBJECTS:
            self.flag(node, f"monkeypatching {node.value.id}.{node.attr}")
        self.generic_visit(node)

    def visit_Call(self, node):
        fn = node.func
        name = fn.id if isinstance(fn, ast.Name) else (fn.attr if isinstance(fn, ast.Attribute) else None)
        if name in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2 and \
                isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            if not self._attr_allowed(node.args[0], node.args[1].value):
                self.flag(node, f"{name}(…, {node.args[1].value!r}) on a third-party object")
        if name in ("setattr", "delattr") and node.args and isinstance(node.args[0], ast.Name) and \
                node.args[0].id in self.external and node.args[0].id not in CONFIGURATION_OBJECTS:
            self.flag(node, f"monkeypatching {node.args[0].id} with {name}")
        if isinstance(fn, ast.Attribute) and fn.attr == "patch" and isinstance(fn.value, ast.Name) and fn.value.id == "mock":
            self.flag(node, "mock.patch outside tests (monkeypatching)")
        self.generic_visit(node)


def scan() -> list[str]:
    """Findings over our code (see module docstring), as ``path:line: what``."""
    trees = {p: ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in _our_files()}
    defined = _defined_private_names(trees)
    findings: list[str] = []
    for path, tree in trees.items():
        scanner = _Scanner(path, _our_top_names(path), defined)
        scanner.visit(tree)
        findings += scanner.findings
    return findings


def test_no_private_api_of_any_dependency():
    findings = scan()
    assert not findings, "private API of a dependency used:\n" + "\n".join(findings)


def _scan_source(source: str) -> list[str]:
    path = ROOT / "project" / "probe.py"
    tree = ast.parse(source)
    scanner = _Scanner(path, _our_top_names(), _defined_private_names({path: tree}) | _defined_private_names(
        {p: ast.parse(p.read_text(encoding="utf-8")) for p in _our_files()}))
    scanner.visit(tree)
    return scanner.findings


def test_the_scan_catches_each_kind_of_finding():
    """The scan is not vacuous: each forbidden pattern is reported, the allowed ones are not."""
    bad = {
        "from psycopg._queries import x": "private module",
        "from mcp_server.djangomcp import _ToolsetMethodCaller": "private name",
        "import psycopg._preparing": "private module",
        "from mcp.server.fastmcp import FastMCP\nFastMCP.call_tool = None": "monkeypatching",
        "import channels_redis\nsetattr(channels_redis, 'x', 1)": "monkeypatching",
        "def f(layer):\n    return layer._group_key('g')": "._group_key",
        "def f(server):\n    return server._mcp_server": "._mcp_server",
        "def f(obj):\n    obj._state.adding = False": "._state",
        "def f(pool):\n    return getattr(pool, '_available_connections', ())": "_available_connections",
        "from unittest import mock\nmock.patch('x')": "mock.patch",
    }
    for source, expected in bad.items():
        findings = _scan_source(source)
        assert any(expected in f for f in findings), (source, findings)
    good = [
        "class A:\n    def f(self):\n        return self._x",
        "def f(model):\n    return model._meta.fields",
        "from mcpapi import guard as mcp_guard\nmcp_guard.TOOL_SCOPES",
        "def f(x):\n    return x.__class__",
    ]
    for source in good:
        assert _scan_source(source) == [], source
