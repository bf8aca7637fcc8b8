"""Imports of the project's modules read with `ast` (module level and inside functions; relative imports
resolved): the layering rule of tests/unit/test_layering.py and the import closure of the training path."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("schema", "ops", "data_pipeline", "pretrain", "launcher")
# which project packages each package may import (besides itself)
ALLOWED = {
    "schema": set(),
    "ops": set(),
    "data_pipeline": {"schema", "ops"},
    "pretrain": {"schema", "ops", "data_pipeline"},
    "launcher": {"schema", "ops", "data_pipeline", "pretrain"},
}


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    module: str  # absolute dotted name of what is imported (for `from X import Y`: X.Y, or X if Y is no module)
    in_function: str | None  # the enclosing function's name, None at module level


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of `packages` under `root`."""
    out = {}
    for package in packages:
        for path in sorted((Path(root) / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def imports_of(path: Path, module: str, known: set[str] | None = None) -> list[Import]:
    """Every import statement of the file, wherever it is (module level, functions, classes, branches)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    is_package = Path(path).name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, function or child.name)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(Path(path), child.lineno, alias.name, function))
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(module, is_package, child.level, child.module)
                for alias in child.names:
                    sub = f"{base}.{alias.name}" if base else alias.name
                    name = sub if known is not None and sub in known else base
                    found.append(Import(Path(path), child.lineno, name, function))
            visit(child, function)

    visit(tree, None)
    return found


def layering_violations(root: Path, packages=PACKAGES, allowed=ALLOWED) -> list[str]:
    """`file:line imports X` for every import of a project package that the rule forbids."""
    files = module_files(root, packages)
    problems = []
    for module, path in files.items():
        own = module.split(".")[0]
        for imp in imports_of(path, module, set(files)):
            target = imp.module.split(".")[0]
            if target in packages and target != own and target not in allowed[own]:
                where = f" (in {imp.in_function}())" if imp.in_function else ""
                problems.append(f"{Path(path).relative_to(root)}:{imp.line} imports {imp.module}{where}")
    return problems


def closure(root: Path, start: dict[str, set[str] | None], packages=PACKAGES) -> tuple[dict[str, list[str]], set[str]]:
    """Project modules reachable from `start` ({module: None for all its imports, or the set of its functions
    whose imports count besides the module level}) following every import, function bodies included.
    Returns (module -> the chain that reaches it, third-party top-level names imported on the way)."""
    files = module_files(root, packages)
    known = set(files)
    chains: dict[str, list[str]] = {}
    external: dict[str, list[str]] = {}
    todo = [(m, [m], only) for m, only in start.items()]
    while todo:
        module, chain, only = todo.pop()
        if module in chains and only is None:
            continue
        chains.setdefault(module, chain)
        for imp in imports_of(files[module], module, known):
            if only is not None and imp.in_function is not None and imp.in_function not in only:
                continue
            name = imp.module
            # importing a.b.c runs a/__init__, a/b/__init__ too
            parts = name.split(".")
            targets = [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in known]
            if parts[0] not in packages:
                external.setdefault(parts[0], chain + [f"{imp.file.name}:{imp.line} {name}"])
            for target in targets:
                if target not in chains:
                    todo.append((target, chain + [target], None))
    return chains, external
