"""Which of the project's own modules a module imports, transitively, read from the source (AST).

Every `import` and `from ... import` counts, also those inside functions (imported lazily, they
still run when the stage does). A package's `__init__.py` counts when it holds more than a
docstring. Only the project's top-level packages are followed; libraries are not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages", "serving", "orchestration")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The source file of a project module (`pipeline.rows` -> pipeline/rows.py), else None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _has_code(init: Path) -> bool:
    body = ast.parse(init.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return bool(body)


def _imported_names(path: Path, package: str) -> set[str]:
    """Module names an import statement in `path` may load (a `from m import x` may mean m.x)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def project_imports(module: str, root: Path = ROOT) -> set[Path]:
    """The project source files `module` runs: itself, and every project module it imports,
    transitively (with the packages on the way whose `__init__.py` holds code)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = module_file(name, root)
        if path is None:
            continue
        parents = [".".join(name.split(".")[:i]) for i in range(1, len(name.split(".")))]
        todo.extend(p for p in parents if module_file(p, root) not in seen)
        if path in seen:
            continue
        if path.name == "__init__.py" and not _has_code(path):
            seen.add(path)
            continue
        seen.add(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo.extend(_imported_names(path, package))
    return {p for p in seen if p.name != "__init__.py" or _has_code(p)}


def project_modules(module: str, root: Path = ROOT) -> list[str]:
    """The dotted names of `project_imports(module)`."""
    out = []
    for path in project_imports(module, root):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return sorted(out)
