"""The package's shape, read from its source: layers import downward only, no import circles, no private names
shared across modules. Layers: core ← viz ← widgets ← cmd ← magics; inside core: registry ← adapters ← training ←
analysis. Function-level imports count as much as top-level ones."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lora_nb"
LAYERS = {"core": 0, "viz": 1, "widgets": 2, "cmd": 3, "magics": 4}
CORE = {"adapters": 1, "training": 2, "analysis": 3, "export": 4}  # anything else in core (registry, …) is 0


def module_name(path: Path) -> str:
    parts = ["lora_nb", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, list[str], int]]:
    """``(module imported, names taken from it, line)`` for every lora_nb import in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("lora_nb")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("lora_nb"):
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{target}.{n}" in known]
            found += [(f"{target}.{n}", [], node.lineno) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest:
                found.append((target, rest, node.lineno))
    return found


def graph() -> dict[str, list[tuple[str, list[str], int]]]:
    known = set(modules())
    return {name: imports(name, path, known) for name, path in modules().items()}


def rank(module: str) -> tuple[int, int] | None:
    parts = module.split(".")[1:]
    if not parts or parts[0] not in LAYERS:
        return None  # lora_nb itself, errors and other shared top-level modules sit outside the layers
    inner = CORE.get(parts[1], 0) if parts[0] == "core" and len(parts) > 1 else 0
    return LAYERS[parts[0]], inner


def test_layers_import_downward_only():
    upward = []
    for module, edges in graph().items():
        mine = rank(module)
        for target, _, line in edges:
            theirs = rank(target)
            facade = modules()[module].name == "__init__.py" and target.startswith(module + ".")
            if mine is not None and theirs is not None and theirs > mine and not facade:
                upward.append(f"{module}:{line} imports {target}")
    assert upward == []


def test_no_import_circles():
    edges = {m: {t for t, _, _ in e if t in modules() and t != m} for m, e in graph().items()}
    circles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" → ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node} → {nxt}")
            elif nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert circles == []


def test_no_private_name_crosses_a_module():
    private = []
    for module, edges in graph().items():
        for target, names, line in edges:
            hidden = [n for n in names if n.startswith("_") and not n.startswith("__")]
            hidden += [s for s in target.split(".") if s.startswith("_") and not s.startswith("__")]
            if hidden and target != module:
                private.append(f"{module}:{line} takes {', '.join(hidden)} from {target}")
    assert private == []


def test_the_project_refers_to_no_document_outside_it():
    """The package cites none of the planning documents; tests, scripts, benchmarks, examples and the README
    cite no document outside the repository (the shared folder beside it, or its files by name)."""
    outside = [f"{p.relative_to(PACKAGE)}:{i}" for p in PACKAGE.rglob("*.py")
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if any(ref in line for ref in ("DESIGN.md", "RELIABILITY.md", "STYLE.md", "shared/"))]
    root = PACKAGE.parent
    names = ("shared/", "DESIGN.md", "STYLE.md", "BROWSER.md", "PEFT_NOTES.md")
    files = [root / "README.md", *[p for folder in ("tests", "scripts", "benchmarks", "examples")
                                   for p in (root / folder).rglob("*") if p.suffix in (".py", ".sh", ".md", ".ipynb")]]
    outside += [f"{p.relative_to(root)}:{i}" for p in files if p.resolve() != Path(__file__).resolve()
                for i, line in enumerate(p.read_text().splitlines(), 1) if any(ref in line for ref in names)]
    assert outside == []
