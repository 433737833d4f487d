"""What the package's docstrings and comments point at exists: every dotted ``lora_nb.…`` name (and ``core.…``,
``training.…``, … relative to the package), every ``module.attr`` and private name in double backticks, every
``run.…`` / ``session.…`` / ``settings.…`` / ``plan.…`` attribute they name, and every Python file they mention by name; the
same for the tests' own docstrings and comments, and the README's ``lora_nb.…`` names. A module moved or a name
renamed fails here until its mentions follow."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path

from lora_nb.core.registry import Session
from lora_nb.core.training.memory.plan import MemoryPlan
from lora_nb.core.training.run import TrainRun
from lora_nb.core.training.settings import TrainSettings

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lora_nb"
HEADS = "lora_nb|core|viz|widgets|cmd|training|adapters|analysis|longrun|processes|memory"
DOTTED = re.compile(rf"(?<![\w.])((?:{HEADS})(?:\.[A-Za-z_]\w*)+)(?!\w|\.py)")
TICKED = re.compile(r"``([A-Za-z_][\w.]*)``")
FILE = re.compile(r"(?<![\w/.])([a-z_][a-z0-9_]*\.py)\b")
# what these names mean in the docs (else a module of that name)
OBJECTS = {"run": TrainRun, "session": Session, "settings": TrainSettings, "plan": MemoryPlan}
THIRD_PARTY = {"datasets", "torch", "peft", "transformers", "accelerate", "numpy", "safetensors"}
DICTS = {"layout", "adapter"}  # ``layout.meta.note``: a path into a figure's plotly layout, not the export's layout
# module; ``adapter.lora.alpha``: a GGUF metadata key, not the watch's adapter module
EXTERNAL = {  # other projects' files and names the docstrings cite, with the project
    "convert_hf_to_gguf.py": "llama.cpp", "convert_lora_to_gguf.py": "llama.cpp", "_set_vocab_gpt2": "llama.cpp",
}
FILES = {p.name for p in ROOT.rglob("*.py") if ".git" not in p.parts}


def texts(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every docstring and comment in ``path``."""
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield (node.body[0].lineno, doc)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT if PACKAGE in path.parents else path.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_named(basename: str) -> list[str]:
    return [module_of(p) for p in PACKAGE.rglob(f"{basename}.py")] + [
        module_of(p / "__init__.py") for p in PACKAGE.rglob(basename) if (p / "__init__.py").is_file()]


def attribute_path(module: str, rest: list[str]) -> bool:
    """``module`` imports and ``rest`` is a chain of attributes of it (or of a submodule)."""
    try:
        obj = importlib.import_module(module)
    except ImportError:
        return False
    except Exception:  # a template, not meant to run as it is (processes/script_template.py): read its names
        spec = importlib.util.find_spec(module)
        return not rest or rest[0] in defined(Path(spec.origin))
    for i, attr in enumerate(rest):
        if not hasattr(obj, attr):  # a submodule not imported yet?
            inner = ".".join([module, *rest[:i + 1]])
            return attribute_path(inner, rest[i + 1:]) if hasattr(obj, "__path__") else False
        obj = getattr(obj, attr)
    return True


def has_attribute(cls: type, attr: str) -> bool:
    return hasattr(cls, attr) or (is_dataclass(cls) and attr in {f.name for f in fields(cls)})


def resolves(name: str, package: str) -> bool:
    """``name`` (``a.b.c``) is a module path and attributes under lora_nb, its core, its training package or
    the package of the module that mentions it."""
    head, *rest = name.split(".")
    if head in OBJECTS and rest and has_attribute(OBJECTS[head], rest[0]):
        return True
    bases = ["", "lora_nb.", "lora_nb.core.", "lora_nb.core.training.", f"{package}."]
    candidates = [base + head for base in bases] + modules_named(head)
    if any(attribute_path(module, rest) for module in dict.fromkeys(candidates) if module.startswith("lora_nb")):
        return True
    return head in THIRD_PARTY and attribute_path(head, rest)  # e.g. ``datasets.Dataset``: Hugging Face's


def defined(path: Path) -> set[str]:
    """Every name ``path`` defines: functions, classes, assigned names and attributes."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


def private_exists(name: str, path: Path) -> bool:
    """A private name mentioned in ``path`` is defined there (or is a module of the package)."""
    return name in defined(path) or bool(modules_named(name)) or name in EXTERNAL


def stale_references() -> list[str]:
    stale = [f"README.md {n}" for n in sorted(set(DOTTED.findall((ROOT / "README.md").read_text())))
             if n.startswith("lora_nb.") and not n.endswith(".py") and not resolves(n, "lora_nb")]
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py")]):
        module = module_of(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for line, text in texts(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            names = set(DOTTED.findall(text))
            names |= {n.rstrip(".") for n in TICKED.findall(text) if "." in n.rstrip(".")
                      and n.split(".")[0] in {*OBJECTS, *(p.stem for p in PACKAGE.rglob("*.py"))} - DICTS}
            names = {n for n in names if not n.endswith(".py")}  # files: checked below
            stale += [f"{where} {n}" for n in sorted(names) if not resolves(n, package)]
            stale += [f"{where} ``{n}``" for n in TICKED.findall(text)
                      if re.fullmatch(r"_[a-z]\w*[a-z0-9]", n) and not private_exists(n, path)]
            stale += [f"{where} {f}" for f in FILE.findall(text) if f not in FILES and f not in EXTERNAL]
    return stale


def test_docstrings_and_comments_name_only_what_exists():
    assert stale_references() == []


def test_the_reference_check_catches_moved_and_renamed_names():
    assert resolves("lora_nb.core.training.run.TrainRun.wait", "lora_nb") and resolves("io.save", "x")
    assert resolves("training.longrun.resume.Checkpointer", "lora_nb") and resolves("run.stop_requested", "")
    assert not resolves("core.dispatch", "lora_nb") and not resolves("core.train.launch", "lora_nb")
    assert not resolves("run.no_such_field", "") and not resolves("lora_nb.core.training.long_run", "lora_nb")
    assert not private_exists("_vs_full_result", PACKAGE / "core" / "analysis" / "shortrun" / "vs_full.py")


README = ROOT / "README.md"
ENTRY = re.compile(r"^(\s*)([\w.]+(?:/|\.py))(?:\s{2,}(.*)|\s*$)")  # `  core/         what it holds`
LISTED = re.compile(r"(?<![\w/.])(\w+)/ \(([^)]*)\)")  # `data/ (batches, chat, position)`: a package and its modules
NAMED_FILE = re.compile(r"(?<![\w.])([\w/]+\.py)\b")


def layout_entries() -> list[tuple[Path, str]]:
    """``(path, its text)`` of every entry in the README's "Layout" tree, nested by indentation; an entry's text
    runs on over the lines indented under it."""
    block = README.read_text().split("\n## Layout\n", 1)[1].split("```", 2)[1]
    entries: list[tuple[Path, str]] = []
    stack: list[tuple[int, Path]] = []
    for line in block.splitlines()[1:]:
        match = ENTRY.match(line)
        if match is None:
            if entries and line.strip():
                entries[-1] = (entries[-1][0], f"{entries[-1][1]} {line.strip()}")
            continue
        indent, name = len(match[1]), match[2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (stack[-1][1] if stack else ROOT) / name.rstrip("/")
        if name.endswith("/"):
            stack.append((indent, path))
        entries.append((path, match[3] or ""))
    return entries


def layout_problems() -> list[str]:
    """What the README's Layout names that is not there, and the packages and top-level modules it leaves out."""
    problems, named = [], set()
    for path, text in layout_entries():
        named.add(path)
        folder = path if path.is_dir() else path.parent
        problems += [f"{path.relative_to(ROOT)}: no such file or folder"] if not path.exists() else []
        for package, modules in LISTED.findall(text):
            named.add(folder / package)
            for module in (m.strip() for m in modules.split(",") if re.fullmatch(r"\s*\w+\s*", m)):  # not prose
                if not ((folder / package / f"{module}.py").is_file() or (folder / package / module).is_dir()):
                    problems.append(f"{path.relative_to(ROOT)}: {package}/ has no module `{module}`")
        for file in NAMED_FILE.findall(text):
            places = [folder / file, *(p / file for p in folder.parents if ROOT in (p, *p.parents))]
            found = next((p for p in places if p.is_file()), None)
            problems += [] if found else [f"{path.relative_to(ROOT)}: names {file}, which is not there"]
            named.add(found)
    packages = [p.parent for p in PACKAGE.rglob("__init__.py")] + list(PACKAGE.glob("*.py"))
    problems += [f"{p.relative_to(ROOT)} is not in the README's Layout" for p in sorted(packages) if p not in named]
    return problems


def test_the_readme_layout_names_every_package_and_only_what_exists():
    assert layout_problems() == []


def package_docstring_problems() -> list[str]:
    """``name`` in a package's docstring that is no module or attribute of it, and modules that a docstring
    naming its package's modules leaves out."""
    problems = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        package = importlib.import_module(module_of(init))
        modules = {p.stem for p in init.parent.glob("*.py") if p.name != "__init__.py"}
        modules |= {p.parent.name for p in init.parent.glob("*/__init__.py")}
        ticked = {n for n in TICKED.findall(doc) if re.fullmatch(r"[a-z_][a-z0-9_]*", n)}
        heads = {n.split(".")[0] for n in TICKED.findall(doc)} & modules  # ``formats.Format`` names ``formats``
        where = init.relative_to(ROOT)
        named = {n for m in modules for n in defined_names(init.parent, m)}
        problems += [f"{where}: ``{n}`` is no module of the package, nor a name in one" for n in sorted(ticked)
                     if n not in modules and not hasattr(package, n) and n not in named]
        if (ticked | heads) & modules:
            problems += [f"{where}: names its modules but not `{m}`" for m in sorted(modules - ticked - heads)]
    return problems


def defined_names(folder: Path, module: str) -> set[str]:
    """The names module ``module`` of ``folder`` defines at its top level (none for a subpackage)."""
    path = folder / f"{module}.py"
    if not path.is_file():
        return set()
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_package_docstrings_name_their_modules_and_only_what_exists():
    assert package_docstring_problems() == []


def test_the_layout_check_catches_a_missing_module(monkeypatch, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n## Layout\n\n```\nlora_nb/\n  nowhere.py    gone\n  core/         training/ (no_such, run)\n```\n")
    monkeypatch.setattr(__import__(__name__), "README", readme)
    problems = layout_problems()
    assert "lora_nb/nowhere.py: no such file or folder" in problems
    assert "lora_nb/core: training/ has no module `no_such`" in problems
    assert "lora_nb/frontend.py is not in the README's Layout" in problems
