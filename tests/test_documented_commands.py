"""Every ``mic-train`` command line in README.md and docs/ composes: its config groups,
experiments and keys exist (a renamed option fails here, not for a reader)."""

import re
import shlex
from pathlib import Path

import pytest

from mic.experiment import load_config

ROOT = Path(__file__).parents[1]
FENCE = re.compile(r"```(?:bash|sh|console)?\n(.*?)```", re.S)


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in FENCE.findall(md.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if "mic-train" not in line:
                    continue
                words = shlex.split(line[line.index("mic-train") :])[1:]
                # hydra.* options steer the launcher (run folder, search path), not mic's config
                overrides = [w for w in words if "=" in w and not w.startswith("hydra.")]
                found.append((f"{md.name}: {line}", overrides))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_every_task():
    text = " ".join(c for c, _ in COMMANDS)
    assert len(COMMANDS) >= 20
    for experiment in ("streets", "det_shapes", "gta2cs_daformer_mic", "cityscapes_foggy"):
        assert f"experiment={experiment}" in text


@pytest.mark.parametrize("overrides", [o for _, o in COMMANDS], ids=[c for c, _ in COMMANDS])
def test_documented_command_composes(overrides):
    load_config(overrides)


def documented_python() -> list[tuple[str, str]]:
    blocks = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, code in enumerate(re.findall(r"```python\n(.*?)```", md.read_text(), re.S)):
            blocks.append((f"{md.name}#{i}", code))
    return blocks


@pytest.mark.parametrize(
    "code", [c for _, c in documented_python()], ids=[n for n, _ in documented_python()]
)
def test_documented_python_uses_names_that_exist(code):
    """Snippets parse, and every ``from mic... import name`` and ``mic.name`` they use exists."""
    import ast
    import importlib

    import mic

    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mic":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mic":
                    importlib.import_module(alias.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "mic"
        ):
            assert hasattr(mic, node.attr), f"mic has no {node.attr}"
