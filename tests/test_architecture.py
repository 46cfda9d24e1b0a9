"""The layout is the architecture: imports only go downward and never in a circle, and no function
is too long to read at once. Read from the source with ``ast``, so a violation fails here before
anyone has to notice it in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "aevision"

# data -> regularizers -> models -> engine -> tasks -> benchmark -> api -> cli, on a foundation that
# imports nothing above it. A module may import its own layer or any lower one.
LAYERS: dict[str, int] = {
    "errors": 0, "validation": 0, "io": 0, "registry": 0, "provenance": 0, "config": 0,
    "data": 1, "coding": 1,
    "regularizers": 2,
    "models": 3,
    "engine": 4, "report": 4,
    "tasks": 5,
    "benchmark": 6,
    "api": 7, "demo": 7,
    "cli": 8, "__main__": 8, "": 8,  # "": the package root, which re-exports the API
}
LONGEST = {"src": 60, "bench": 80}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The aevision modules ``path`` imports (anywhere in it, function bodies included): for
    ``from X import y`` the module ``X.y`` when it is one, else ``X``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in found if m in known}


def layer(name: str) -> int:
    top = name.split(".")[1] if "." in name else ""
    return LAYERS[top]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(path, name, set(mods)) - {name} for name, path in mods.items()}


def test_every_module_has_a_layer() -> None:
    unknown = sorted({n for n in modules() if "." in n and n.split(".")[1] not in LAYERS})
    assert not unknown, f"modules outside every layer (add them to LAYERS): {unknown}"


def test_imports_only_go_downward() -> None:
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                    if layer(b) > layer(a))
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    g, cycles = graph(), []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(g):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def long_functions(top: str, limit: int) -> list[str]:
    found = []
    for path in sorted((ROOT / top).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > limit:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return found


@pytest.mark.parametrize("top", sorted(LONGEST))
def test_functions_fit_on_a_screen(top: str) -> None:
    found = long_functions(top, LONGEST[top])
    assert not found, f"functions in {top}/ longer than {LONGEST[top]} lines:\n" + "\n".join(found)


def test_bench_scripts_use_the_installed_package() -> None:
    tricks = [p.name for p in sorted((ROOT / "bench").glob("*.py")) if "sys.path" in p.read_text()]
    assert not tricks, f"bench scripts that edit sys.path: {tricks}"


def test_bench_has_no_run_lifecycle_of_its_own() -> None:
    """Every bench trains through the library's runs (engine/run.py): no reuse module, no keys,
    fingerprints, 'started' records or hand-read histories of a bench's own (the throughput
    scripts time the Trainer itself, which is theirs to call)."""
    assert not (ROOT / "bench" / "reuse.py").exists()
    own = [f"{p.name}: {word}" for p in sorted((ROOT / "bench").glob("*.py"))
           for word in ("bench_config", "started.json", "def run_key", "def fingerprint", "history.csv")
           if word in p.read_text()]
    assert not own, f"bench scripts keeping runs by hand: {own}"
