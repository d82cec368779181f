"""The shape of the library (README.md, "The pieces"): mic.core imports nothing else of mic and
reads top to bottom without an import cycle, type-only imports included; the machinery depends
on core only; no task imports another; core names no task."""

import ast
from pathlib import Path

import pytest

MIC = Path(__file__).parents[1] / "mic"

#: the line budget of mic/core but checks.py: the contract and the loop, what a researcher reads
#: (docstrings included). It stood at 2374 lines when the core's refusals moved into checks.py
#: (each grown in, one by one, against an input that ended in torch's traceback or trained
#: silently wrong). A new refusal goes into checks.py; other growth belongs in mic.training or
#: a task. Since the split: the refusals' Raises sections completed, +11; what loading a state
#: without a teacher or a scheduler does, and that a state's tensors are live, +8; the
#: teacher's prediction on one image through BatchNorm on the batch's statistics named (the
#: catch of torch's ValueError and its Raises section), +10; the random streams in a module
#: of their own, read before the masker that draws from them (its docstring and imports), +13;
#: the masker's augmentation and blocks each on a stream of its own (``substream``), +10; a
#: step cut short by a term's DatasetError not saved as if a batch had failed to load, +8; the
#: micro-batches' statistics averaged in a function of their own, +5; docstrings corrected, +6;
#: the weighting's unused ``mean`` argument removed, -6; a substream kept per name and a
#: sample's stream counted per call (two masker calls on one stream: two masks), and the
#: stream helpers importable from mic.core.context as before, +13.
CORE_MAX_LINES = 1904
#: the line budget of mic/core/checks.py, the refusals, which reading the loop needs none of
#: (834 at the split; a masker's fill checked when it is built, +11; one check of a channel's
#: values for the normalisation's mean and std and the masker's fill, moved from
#: mic/augmentation.py, +15; mic's words for BatchNorm's one value per channel where the
#: teacher predicts, +16; a Task.loss of no parts, +6; a bool confidence told to go in
#: PseudoLabels.valid, and the value of a loss without a gradient named, +6; a training loader
#: that is no iterable, named, a dataset of a class of its own (the bundled ones) told to go in a
#: DataLoader, +12; what is no loop state given to AdaptationLoop.load_state_dict (a path, a
#: model's weights), named, +10)
CHECKS_MAX_LINES = 910


def imports(path: Path) -> set[str]:
    """Every mic module a file imports (inside ``if TYPE_CHECKING:`` too)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(MIC.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "mic" or name.startswith("mic.")}


def module_name(path: Path) -> str:
    parts = path.relative_to(MIC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def files(folder: str) -> list[Path]:
    return sorted((MIC / folder).rglob("*.py")) if folder else sorted(MIC.glob("*.py"))


def test_core_imports_nothing_else_of_mic_and_has_no_cycle():
    graph = {}
    for path in files("core"):
        deps = imports(path)
        outside = sorted(d for d in deps if not d.startswith("mic.core"))
        assert not outside, f"{path.name} imports {outside}"
        if path.name != "__init__.py":
            graph[module_name(path)] = {d for d in deps if d != "mic.core"}
    order = []  # a topological order exists iff there is no cycle
    while graph:
        ready = sorted(m for m, deps in graph.items() if not deps & set(graph))
        assert ready, f"import cycle among {sorted(graph)}"
        order += ready
        for m in ready:
            del graph[m]
    assert order.index("mic.core.task") < order.index("mic.core.loop")


@pytest.mark.parametrize("folder", ["training", ""])
def test_the_machinery_depends_on_core_only(folder):
    allowed = ("mic.core", "mic.training", "mic.augmentation", "mic.functional", "mic.methods")
    for path in files(folder):
        if folder == "" and path.name not in ("augmentation.py", "functional.py", "methods.py"):
            continue
        bad = sorted(d for d in imports(path) if not d.startswith(allowed))
        assert not bad, f"{path.relative_to(MIC)} imports {bad}"


def test_no_task_imports_another():
    tasks = ("classification", "segmentation", "detection")
    for task in tasks:
        for path in files(f"tasks/{task}"):
            others = [f"mic.tasks.{t}" for t in tasks if t != task]
            bad = sorted(d for d in imports(path) if d.startswith(tuple(others)))
            assert not bad, f"{path.relative_to(MIC)} imports {bad}"


def test_core_stays_readable_in_one_sitting():
    sizes = {p.name: len(p.read_text().splitlines()) for p in MIC.joinpath("core").glob("*.py")}
    refusals, lines = sizes.pop("checks.py"), sum(sizes.values())
    assert lines <= CORE_MAX_LINES, f"mic/core holds {lines} lines, over {CORE_MAX_LINES}"
    assert refusals <= CHECKS_MAX_LINES, f"checks.py holds {refusals}, over {CHECKS_MAX_LINES}"


def test_the_core_checks_import_only_the_core_errors():
    """What checks.py tells by ``isinstance`` it is handed, so every core module may call it."""
    assert imports(MIC / "core" / "checks.py") == {"mic.core.errors"}


def test_core_names_no_task_in_its_code():
    for path in files("core"):
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        strings = [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
        for word in ("segmentation", "detection", "classification", "SAM", "sam"):
            assert word not in names, f"{path.name} uses the name {word}"
        code_strings = [s for s in strings if "\n" not in s]  # docstrings may explain
        assert not any("mic.tasks" in s for s in code_strings), path.name


PUBLIC = ["mic", "mic.training", "mic.backbones", "mic.datasets", "mic.experiment", "mic.resume"]
PUBLIC += ["mic.scoring"]
PUBLIC += [f"mic.tasks.{t}" for t in ("classification", "segmentation", "detection")]


@pytest.mark.parametrize("module", PUBLIC)
def test_the_public_type_hints_resolve_at_run_time(module):
    """Runtime type checkers and documentation tools read hints with typing.get_type_hints: a
    name imported for type checkers alone (Evaluation's Task) made it raise NameError. The
    package ships py.typed (PEP 561), so that type checkers read the hints at all."""
    import importlib
    import inspect
    import typing

    mod = importlib.import_module(module)
    checked = 0
    for name in mod.__all__:
        obj = getattr(mod, name)
        if not str(getattr(obj, "__module__", "")).startswith("mic"):
            continue
        functions = [obj] if inspect.isfunction(obj) else []
        if inspect.isclass(obj):
            functions = [f for f in vars(obj).values() if inspect.isfunction(f)]
        for function in functions:
            typing.get_type_hints(function)  # raises NameError for an unresolvable hint
            checked += 1
    assert checked
    assert (MIC / "py.typed").is_file()
    assert '"mic" = ["py.typed"]' in (MIC.parent / "pyproject.toml").read_text()
