"""The shape of the library (README.md, "The pieces"): mic.core imports nothing else of mic and
reads top to bottom without an import cycle, type-only imports included; the machinery depends
on core only; no task imports another; core names no task."""

import ast
from pathlib import Path

import pytest

MIC = Path(__file__).parents[1] / "mic"

#: mic/core/*.py's line budget (its size when set; raised for the checks against silently
#: wrong training and for the Python API's inputs that ended in torch's tracebacks or trained
#: silently wrong: pseudo-labels changed in place, hooks, maskers, Task.loss; every
#: consistency term logs its quality weight q, moved into PseudoLabelWeighting; a masker
#: that masks nothing, a fractional block and an augmentation class, which trained silently
#: wrong or failed at the first call; a method, student or teacher model of the wrong kind,
#: which ended in AttributeErrors; the one whole-number predicate, is_whole, that the core's
#: masker, the config schema, the tasks' settings and rare class sampling share; the class
#: names in the class-count message; the EMA teacher's update without a host synchronisation
#: on a GPU; Hook.teardown, which releases a hook's files and bars also when a run raises;
#: a term that replaces the batch or changes the source's labels in place, and terms of
#: weight 0 switched off and a method whose every term has weight 0 refused, which trained
#: silently wrong or nothing; a dataset given where a loader of batches goes, whose samples
#: were taken for batches; the EMA teacher's student compiled, moved, cast or re-registered
#: after the teacher was made, and a random stream placed outside its layout, which averaged
#: other layers, failed in torch or broadcast one mask over a batch; the quality weight of
#: the optimiser step's micro-batches together, which was each micro-batch's; terms of two
#: branches that read one shared forward pass, which ended in autograd's error of a second
#: backward pass; consistency losses and weightings given no PseudoLabels, quality weights
#: shared in memory with q, and a teacher of another model or a fractional step, which ended
#: in AttributeErrors or torch's errors, or averaged silently; the loop's argument checks
#: moved out of its constructor into a function of their own, +12 lines of signature, so
#: that the constructor reads as what the loop holds; a warning of the student's trainable
#: parameters left out of the optimizer, which got gradients and never changed; the class
#: count message's own advice for a test set alone of another count; a teacher that is the
#: student, which switched it to eval mode mid-iteration, a masker returning images of
#: another shape or dtype, which trained silently or failed in torch, and every hook's
#: after_run reached with the raising hook named, +45; negative part weights, which made
#: training maximise a part, +5; a loop loader that is None, a TypeError inside the loop,
#: +1; BlockMasker's check of an augmentation given as a class made a function that the base
#: methods' check_augmentation calls too, in place of its copy there, +1; a loop state of
#: another optimiser class refused on loading (torch took it and failed steps later), a run
#: at or past its iterations after loading warned of, a method given a list of terms, MIC's
#: loss given pseudo-labels of another number of images named (torch's batch-size error),
#: +21; BlockMasker returns channels-last images as it got them, +2; BlockMasker and
#: EMATeacher print their settings, +6; a hook listed twice named, +2; a Task that sets no
#: num_classes named by check_datasets, +5; a CUDA index the machine lacks refused by the
#: loop, which mic-train's and load_run's device checks now call in place of their own, +4;
#: pseudo-labels that the task's own target check refuses named as Task.pseudo_label's, not
#: as a dataset's labels, +6; a loader batched by torch's default_collate where the task
#: collates (and may make its targets) of its own warned of, +10; images of a later batch that
#: are no tensors (a PIL image past the sample the data check reads) named, was torch's
#: default_collate TypeError, +9; a data error in a batch noted with the loader it came from,
#: source or target, whose collate says the same words for both, +7; a consistency term's
#: statistics also from its loss called alone, +2; a teacher's parameter the student lacks
#: named as such, +1; note_loader, the one helper that names the loader of a batch's data
#: error for the loop's loaders, the test set's and the validation's, which each wrote the
#: note of their own, +6; train_step's docstring says that run advances the step, which a
#: loop of one's own left at 0, +4; a masker that takes no random stream refused when MIC is
#: built, was a TypeError at the first adapting iteration, +10; EMATeacher.decay of a negative
#: step refused (a ZeroDivisionError), alpha=1 said, hooks' teardown order said, BlockMasker's
#: block sizes said, the NaN confidence hint naming the teacher's weights, +8; a masker with
#: a __call__ of its own checked by it, +2): growth there belongs in mic.training or a task
CORE_MAX_LINES = 2374


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
    lines = sum(len(path.read_text().splitlines()) for path in MIC.joinpath("core").glob("*.py"))
    assert lines <= CORE_MAX_LINES, f"mic/core holds {lines} lines, over {CORE_MAX_LINES}"


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
