"""The layout's rules, read from the source (every import counts, also those inside functions):

- no import cycle between the project's modules;
- no product module (what runs in a stage, an Airflow task, the DAG file or the server) imports
  developer tooling (`devtools`) or test code (`tests/`);
- the local Triton process is started in one place (serving/startup.py, which also brings back
  what the repository pins): every command, test and bench starts it through there;
- every product module is run by the product: reached through imports from an entry point (a stage
  or other `python -m` command, the DAG file, the Airflow plugin, or one named below), so no module
  that only tests or benches use sits in a product package.
"""

from __future__ import annotations

import ast
from pathlib import Path

from project_imports import ROOT

PRODUCT = ("dags", "plugins", "stages", "pipeline", "serving", "orchestration")
TOOLING = ("devtools",)
TEST_MODULES = {p.stem for p in (ROOT / "tests").rglob("*.py")} | {"tests"}
# Entry points that no import names: module -> who runs it.
NAMED_ENTRY_POINTS = {
    "orchestration.hostname": "Airflow's [core] hostname_callable (a setting, devtools/cluster/services.py)",
    "serving.backend.model": "Triton's Python backend (the export stage copies it into the candidate)",
    "serving.backend.router": "Triton's Python backend (a rollout loads it in front of the model: serving/rollout/router_config.py)",
}


def modules(packages: tuple[str, ...] = (*PRODUCT, *TOOLING), root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of `packages`."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """Every module name an import statement of the module `name` names (`from m import x` also m.x)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name resolves to its longest known module)."""

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts and ".".join(parts) not in found:
            parts.pop()
        return ".".join(parts) or None

    edges = {}
    for name, path in found.items():
        edges[name] = {m for m in map(resolve, imports(name, path)) if m and m != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def product_imports_of_tooling(found: dict[str, Path]) -> dict[str, list[str]]:
    bad = {}
    for name, path in found.items():
        if name.split(".")[0] not in PRODUCT:
            continue
        named = imports(name, path)
        wrong = sorted(
            n for n in named if n.split(".")[0] in TOOLING or (n.split(".")[0] in TEST_MODULES and "." not in n)
        )
        if wrong:
            bad[name] = wrong
    return bad


def unreached_product_modules(found: dict[str, Path]) -> list[str]:
    """Product modules that no entry point reaches through imports (with the packages on the way)."""
    product = {name: path for name, path in found.items() if name.split(".")[0] in PRODUCT}
    edges = graph(product)
    todo = [
        name
        for name, path in product.items()
        if name.split(".")[0] in ("dags", "plugins", "stages")
        or path.name == "__main__.py"
        or 'if __name__ == "__main__":' in path.read_text()
        or name in NAMED_ENTRY_POINTS
    ]
    reached: set[str] = set()
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in product]
        todo += edges[name]
    return sorted(set(product) - reached)


def test_no_import_cycle_between_project_modules() -> None:
    assert cycles(graph(modules())) == []


def test_no_product_module_imports_tooling_or_test_code() -> None:
    assert product_imports_of_tooling(modules()) == {}


def test_every_product_module_is_run_by_the_product() -> None:
    assert unreached_product_modules(modules()) == []


def callers(function: str, folders: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """`path:line` of every call of `function` (by name or attribute) in the Python files of `folders`."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                    if name == function:
                        found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_the_server_process_is_started_one_way() -> None:
    starts = callers("start_server", (*PRODUCT, *TOOLING, "tests", "bench"))
    assert [s.split(":")[0] for s in starts] == ["serving/startup.py"], starts


def test_the_checks_catch_a_cycle_and_a_product_module_importing_tooling(tmp_path: Path) -> None:
    """The checks can fail: a two-module cycle (through a lazy import), a serving module that
    imports the toy candidate and a test helper, and a serving module nothing runs are reported."""
    (tmp_path / "serving").mkdir()
    (tmp_path / "devtools").mkdir()
    (tmp_path / "serving" / "a.py").write_text("from serving import b\n")
    (tmp_path / "serving" / "b.py").write_text("def f():\n    from serving.a import x\n")
    (tmp_path / "serving" / "c.py").write_text("from devtools.toy import build_candidate\nimport support\n")
    (tmp_path / "devtools" / "toy.py").write_text("from serving import a\n")
    found = modules(("serving", "devtools"), tmp_path)
    assert cycles(graph(found)) == [["serving.a", "serving.b"]]
    assert product_imports_of_tooling(found) == {
        "serving.c": ["devtools.toy", "devtools.toy.build_candidate", "support"]
    }
