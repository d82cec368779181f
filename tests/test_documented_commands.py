"""Every ``mic-train`` command line in README.md and docs/ composes: its config groups,
experiments and keys exist (a renamed option fails here, not for a reader)."""

import re
import shlex
from pathlib import Path

import pytest

from mic.experiment import load_config

ROOT = Path(__file__).parents[1]
# a fenced block: its language and its text (fences at the start of a line only, so that a
# closing fence is never taken for an opening one)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def first_of_sweeps(overrides: list[str]) -> list[str]:
    """A multirun's overrides with each sweep (``seed=0,1,2``) reduced to its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        if parsed.is_sweep_override():
            text = f"{parsed.get_key_element()}={next(iter(parsed.sweep_string_iterator()))}"
        out.append(text)
    return out


def command_blocks() -> list[tuple[str, str]]:
    """(file name, text) of the shell blocks of README.md and docs/, and of the comments of
    conf/ (whose examples are shell lines after ``#``)."""
    blocks = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for language, block in FENCE.findall(md.read_text()):
            if language in ("", "bash", "sh", "console"):
                blocks.append((md.name, block))
    for yaml in sorted((ROOT / "conf").rglob("*.yaml")):
        comments = [line.split("#", 1)[1] for line in yaml.read_text().splitlines() if "#" in line]
        blocks.append((str(yaml.relative_to(ROOT)), "\n".join(comments)))
    return blocks


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for name, block in command_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            entry = next((e for e in ("mic-train ", "-m mic.train") if e in line + " "), None)
            if entry is None:
                continue
            words = shlex.split(line[line.index(entry.strip()) + len(entry.strip()) :])
            # hydra.* options steer the launcher (run folder, search path), not mic's config
            overrides = [w for w in words if "=" in w and not w.startswith("hydra.")]
            if "--config-dir" in words:  # a folder on the search path, e.g. `cd examples && ...`
                folder = words[words.index("--config-dir") + 1]
                cd = re.search(r"cd (\S+) &&", line)
                path = (ROOT / (cd.group(1) if cd else ".") / folder).resolve()
                overrides.append(f"hydra.searchpath=[file://{path}]")
            found.append((f"{name}: {line}", first_of_sweeps(overrides)))
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
        python = [code for language, code in FENCE.findall(md.read_text()) if language == "python"]
        blocks += [(f"{md.name}#{i}", code) for i, code in enumerate(python)]
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
