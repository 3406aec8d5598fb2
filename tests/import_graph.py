"""The project's import graph, read from the source with `ast`: which of our modules each
module imports (at the top, inside functions, relative or absolute).

Used by the layering test and by the check that each service image copies what its process
imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Every installable package of the project (pyproject.toml's packages), bottom layer first.
PACKAGES = ("lumos", "services", "gateway", "eval", "training", "bench", "lumos_cli")


@dataclass(frozen=True)
class Import:
    """`module` (in `path`, at `line`) imports `target`, a module of ours."""

    module: str
    path: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line} imports {self.target}"


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, module: str, *, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, imported module) of every import statement of `source`, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            # `from pkg import mod` imports pkg.mod when that is a module; the layer is the same
            yield node.lineno, stem


def is_ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def python_files(package: str, root: Path = REPO) -> Iterable[Path]:
    return sorted((root / package.replace(".", "/")).rglob("*.py"))


def imports_of(package: str, root: Path = REPO) -> list[Import]:
    """Every import of one of our modules made by a module of `package` (e.g. ``services``)."""
    found = []
    for path in python_files(package, root):
        module = module_name(path, root)
        for line, target in imports_in(
            path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py"
        ):
            if is_ours(target):
                found.append(Import(module, path, line, target))
    return found


def component(module: str) -> str:
    """The unit a module belongs to: its top-level package, or ``services.<service>``."""
    parts = module.split(".")
    if parts[0] == "services" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def closure(start: str, root: Path = REPO) -> set[str]:
    """The components `start` (e.g. ``services.executor``) needs at run time, itself included."""
    needed = {start}
    todo = [start]
    while todo:
        for imp in imports_of(todo.pop(), root):
            unit = component(imp.target)
            path = root / unit.replace(".", "/")
            if unit not in needed and (path.is_dir() or path.with_suffix(".py").is_file()):
                needed.add(unit)
                todo.append(unit)
    return needed
