"""The architecture, enforced: no import cycle among ponder's modules (function-level imports
included, which import-linter's layers cannot see), and imports go downward only (the layers
are import-linter's contract in pyproject.toml, run by .ci/run)."""

import ast
from pathlib import Path

import ponder

PACKAGE = Path(ponder.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each ponder module and the ponder modules it imports, anywhere in its code."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        # Imports for type checkers only never run.
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                       for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                # "from ponder.x import y" imports ponder.x.y when that is a module.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # "import ponder.x.y" -> ponder.x.y
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("ponder"):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_among_ponder_modules():
    # A package's __init__ re-exporting its modules is not a cycle of concepts: leave out the
    # edges from a package to the modules inside it.
    graph = {name: {t for t in targets if not t.startswith(name + ".")}
             for name, targets in import_graph().items()}
    assert cycles(graph) == []


def test_test_modules_share_helpers_not_each_other():
    tests = Path(__file__).parent
    imported = {}
    # The benchmarks share the tests' helpers (the SQL guard's corpus) the same way.
    for path in [*tests.rglob("*.py"), *(tests.parent / "benchmarks").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.startswith("tests.") and not name.startswith("tests.helpers"):
                    imported[str(path.relative_to(tests.parent))] = name
    assert imported == {}
