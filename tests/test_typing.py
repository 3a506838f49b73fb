"""Every public function and method in the package is fully annotated (issue #11, item 7).

Read from the syntax tree of every ``ddif/**/*.py``: a function is public when its name does not
start with ``_``, it is defined at module level or in a public class (nested public classes
included, functions defined inside functions are not), and its module's path has no component
starting with ``_`` (``__init__.py`` counts as its package). ``__init__`` is included for its
parameters. Every parameter but a method's ``self`` / ``cls`` (``*args`` and ``**kwargs``
included) needs an annotation, and so does the return (not ``__init__``'s).

mypy itself (the configuration in pyproject.toml) is run by CI; this test needs nothing beyond
the standard library, so it runs everywhere."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ddif"

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def _public_module(path: Path) -> bool:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return not any(part.startswith("_") for part in parts if part != "__init__")


def _public_functions(tree: ast.Module) -> Iterator[tuple[str, FunctionNode, bool]]:
    """(qualified name, node, is a method) of each public function in a module."""

    def visit(body: list[ast.stmt], prefix: str, in_class: bool) -> Iterator[tuple[str, FunctionNode, bool]]:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if not node.name.startswith("_") or (in_class and node.name == "__init__"):
                    yield prefix + node.name, node, in_class
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                yield from visit(node.body, f"{prefix}{node.name}.", True)
            elif isinstance(node, ast.If | ast.Try):  # definitions under `if TYPE_CHECKING:` / try-imports
                for block in (node.body, node.orelse, *(h.body for h in getattr(node, "handlers", []))):
                    yield from visit(block, prefix, in_class)

    yield from visit(tree.body, "", False)


def _is_staticmethod(node: FunctionNode) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)


def missing_annotations(node: FunctionNode, is_method: bool) -> list[str]:
    """Names of the unannotated parts of one function (``return`` for the return type)."""
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    if is_method and not _is_staticmethod(node) and positional:
        positional = positional[1:]  # self / cls
    params = [*positional, *([args.vararg] if args.vararg else []), *args.kwonlyargs]
    if args.kwarg is not None:
        params.append(args.kwarg)
    missing = [a.arg for a in params if a.annotation is None]
    if node.returns is None and node.name != "__init__":
        missing.append("return")
    return missing


def unannotated() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if not _public_module(path):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for name, node, is_method in _public_functions(tree):
            missing = missing_annotations(node, is_method)
            if missing:
                rel = path.relative_to(PACKAGE.parent)
                problems.append(f"{rel}:{node.lineno} {name}: {', '.join(missing)}")
    return problems


def test_checker_sees_the_package():
    """The walk finds the package's public API (guards against a checker that checks nothing)."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if _public_module(path):
            found += [name for name, _, _ in _public_functions(ast.parse(path.read_text()))]
    assert "DDIF.forward" in found and "get_preset" in found and len(found) > 200


def test_checker_flags_missing_annotations():
    tree = ast.parse(
        "def f(a, b: int, *args, c=1, **kw): pass\n"
        "class C:\n"
        "    def __init__(self, x): pass\n"
        "    @staticmethod\n"
        "    def s(y) -> None: pass\n"
        "    def ok(self, z: int) -> int: return z\n"
        "    def _private(self, w): pass\n"
        "class _Hidden:\n"
        "    def m(self, v): pass\n"
    )
    found = {name: missing_annotations(node, is_method) for name, node, is_method in _public_functions(tree)}
    assert found == {
        "f": ["a", "args", "c", "kw", "return"],
        "C.__init__": ["x"],
        "C.s": ["y"],
        "C.ok": [],
    }


def test_public_functions_are_annotated():
    problems = unannotated()
    assert not problems, f"{len(problems)} public functions lack annotations:\n" + "\n".join(problems)
