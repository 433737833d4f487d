"""The package's shape, read from its source: layers import downward only, no import circles, no private names
shared across modules, no object's private attribute reached from outside it. Layers: core ← viz ← widgets ← cmd ←
magics; inside core: registry ← adapters ← training ← analysis. Function-level imports count as much as top-level ones;
imports under ``if TYPE_CHECKING:`` only name types for annotations (they never run), so they make no circle and no
layer edge, but they take no private name either."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lora_nb"
LAYERS = {"core": 0, "viz": 1, "widgets": 2, "cmd": 3, "magics": 4}
CORE = {"adapters": 1, "training": 2, "analysis": 3, "export": 4, "watch": 4}  # anything else in core (registry, …) is 0


def module_name(path: Path) -> str:
    parts = ["lora_nb", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def type_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    blocks = [n for n in ast.walk(tree) if isinstance(n, ast.If) and ast.unparse(n.test).endswith("TYPE_CHECKING")]
    return {id(n) for block in blocks for stmt in block.body for n in ast.walk(stmt)}


def imports(name: str, path: Path, known: set[str], typing: bool = False) -> list[tuple[str, list[str], int]]:
    """``(module imported, names taken from it, line)`` for every lora_nb import in ``path`` (with ``typing``, also
    those under ``if TYPE_CHECKING:``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    tree = ast.parse(path.read_text())
    skip = set() if typing else type_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
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


def graph(typing: bool = False) -> dict[str, list[tuple[str, list[str], int]]]:
    known = set(modules())
    return {name: imports(name, path, known, typing) for name, path in modules().items()}


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
    for module, edges in graph(typing=True).items():
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


# Private attributes of objects lora_nb does not own, read because no public way exists; each with its reason.
FOREIGN_PRIVATES = {
    "_actions": "argparse: a parser's options are listed only in ArgumentParser._actions (completion, option checks)",
    "_StoreTrueAction": "argparse: the class of a flag's action, to tell flags from options that take a value",
    "_StoreFalseAction": "argparse: the class of a --no-… flag's action (same reason)",
    "_register_custom_module": "peft: LoraConfig's (experimental) hook mapping a custom layer type to its LoRA layer",
    "_disable_adapters": "peft: BaseTunerLayer's on/off flag, set directly on the indexed fast path (peft's "
                         "enable/disable_adapter_layers walk every module of the model)",
    "_active_adapter": "peft: BaseTunerLayer's active adapter names, set directly on the indexed fast path (peft's "
                       "set_adapter walks every module of the model)",
    "_ConvNd": "torch: the common base class of Conv1d/2d/3d",
    "_view_name": "ipywidgets: the synced trait naming a widget's front-end view; None for widgets without one "
                  "(ipywidgets 7.x builds its display bundle from it)",
    "_version": "torch: a tensor's in-place version counter, the cheap key that says its values changed",
    "_foreach_copy_": "torch: the fused copy of a list of tensors (one kernel instead of one per parameter)",
    "_shared_state": "accelerate: AcceleratorState's singleton, the only sign an Accelerator was created",
    "_set_params_and_buffers_to_ignore_for_model": "torch DDP: keep the frozen base weights out of the all-reduce",
    "_caches": "peft: BaseTunerLayer's cache, where DoRA's merge_safe leaves the weight norm; put back after an export",
    "_lora_dashboard": "an attribute lora_nb sets on an ipywidgets widget it made, so the widget keeps its view alive",
    "_lora_panel": "an attribute lora_nb sets on an ipywidgets widget it made, so the widget keeps its view alive",
}


def private_reaches(tree: ast.Module) -> list[tuple[int, str]]:
    """``obj._name`` where ``obj`` is not ``self``/``cls``/``super()``: one object reaching into another's privates.
    IPython's display protocol (``_repr_html_``, ``_repr_mimebundle_``, ``_ipython_…_``) is public by convention."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        base = node.value
        if isinstance(base, ast.Name) and base.id in ("self", "cls"):
            continue
        if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
            continue
        if node.attr.startswith(("_repr_", "_ipython_")) and node.attr.endswith("_"):
            continue
        found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_object_reaches_into_another_objects_private_attributes():
    """A class's own methods use its private fields; everyone else goes through its public methods and properties
    (e.g. the loop and the process driver drive a ``TrainRun`` through ``begin``/``end``/``mark_ended``/
    ``stop_requested``, never its lock or events)."""
    reaches = [f"{module}:{line} {text}" for module, path in modules().items()
               for line, text in private_reaches(ast.parse(path.read_text()))
               if text.rpartition(".")[2] not in FOREIGN_PRIVATES]
    assert reaches == []


def test_the_private_attribute_rule_catches_a_reach():
    tree = ast.parse("def f(run):\n    run._stop.set()\n    self._x = super()._y\n    r._repr_html_()\n")
    assert private_reaches(tree) == [(2, "run._stop")]


UI_NAMES = {"ui", "mode", "view_mode", "resolve_ui"}  # what holds, or answers, which front end a view is for
MODES = {"auto", "widget", "static", "text"}


def ui_branches(tree: ast.Module) -> list[tuple[int, str]]:
    """Comparisons that branch on a view mode (``ui == "widget"``, ``mode != "text"``,
    ``ctx.view_mode(args) == …``): each front end's view is picked from a table instead (``frontend.pick``)."""
    def about_ui(node: ast.expr) -> bool:
        node = node.func if isinstance(node, ast.Call) else node
        return ((isinstance(node, ast.Name) and node.id in UI_NAMES)
                or (isinstance(node, ast.Attribute) and node.attr in UI_NAMES))

    def a_mode(node: ast.expr) -> bool:
        values = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return any(isinstance(v, ast.Constant) and v.value in MODES for v in values)

    return [(node.lineno, ast.unparse(node)) for node in ast.walk(tree) if isinstance(node, ast.Compare)
            and any(about_ui(n) for n in [node.left, *node.comparators])
            and any(a_mode(n) for n in [node.left, *node.comparators])]


def test_views_are_picked_in_one_place_not_branched_on_their_mode():
    """What ``ui`` means is decided in ``frontend.py`` only; a view family maps widget / static / text to its
    views and ``frontend.pick`` chooses, so no module compares a mode itself."""
    branches = [f"{module}:{line} {text}" for module, path in modules().items() if module != "lora_nb.frontend"
                for line, text in ui_branches(ast.parse(path.read_text()))]
    assert branches == []


def test_the_ui_branch_rule_catches_a_branch():
    tree = ast.parse("if self.ui == 'text':\n    pass\nx = ctx.view_mode(args) != 'widget'\ny = 'text' in columns\n"
                     "z = module.padding_mode != 'zeros'\nif 'lines' in mode:\n    pass\nw = ui in ('static', 'text')\n")
    assert [line for line, _ in ui_branches(tree)] == [1, 3, 8]


ERROR_RED = re.compile(r"color\s*:\s*(#b00020|#b00\b|#c00\b|#d00\b|#f00\b|red\b)", re.IGNORECASE)


def test_html_helpers_and_the_error_colour_have_one_home():
    """Errors are written in one colour and backticked names become ``code`` in one way: both in ``markup.py``,
    which every layer imports (the core's HTML tables included)."""
    home = PACKAGE / "markup.py"
    elsewhere = [f"{p.relative_to(PACKAGE)}:{i}" for p in sorted(PACKAGE.rglob("*.py")) if p != home
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if ERROR_RED.search(line) or "<code>\\1</code>" in line or re.match(r"def (code_spans|error_html)", line)]
    assert elsewhere == []
    from lora_nb.markup import ERROR_COLOUR, code_spans, error_html

    assert ERROR_RED.search(f"color:{ERROR_COLOUR}") and error_html("no `x`") == (
        f"<span style='color:{ERROR_COLOUR}'>no <code>x</code></span>") and code_spans("<`a`>") == "&lt;<code>a</code>&gt;"
