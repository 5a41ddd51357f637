"""The README's tour runs as written, and every option the README, the docs and the
commands' messages name exists in that command's --help."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def tour() -> str:
    """The shell block between ``<!-- tour -->`` and ``<!-- /tour -->`` in README.md."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- tour -->", 1)[1].split("<!-- /tour -->", 1)[0]
    return block.split("```sh\n", 1)[1].rsplit("```", 1)[0]


def test_the_tour_runs_as_written(tmp_path):
    script = tour()
    activate = ". .venv/bin/activate"
    assert script.startswith(activate)  # the one line the test replaces: dataprep is on PATH here
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "N": "300", "PHOTOS": "30", "ITER": "2", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-e", "-x", "-c", script.replace(activate, ":", 1)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    made = tmp_path / "tour"
    for path in (
        "train_h5.txt",
        "photos_lmdb",
        "noise_regression_iter_2.npz",
        "noise_stream_iter_4.npz",
        "lenet_iter_2.npz",
        "cifar10_quick_iter_2.npz",
        "kernels.png",
        "back/noise_regression.yaml",
    ):
        assert (made / path).exists(), path


OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
GROUPS = {"recipe": ("to-prototxt", "to-yaml", "list", "copy")}


def help_options() -> dict[str, set[str]]:
    """Every command's (``recipe to-yaml`` for a group's) options, from its --help."""
    from click.testing import CliRunner

    from dataprep.cli.main import COMMANDS, cli

    runner = CliRunner()
    paths = [[]] + [[name] for name in COMMANDS if name not in GROUPS]  # [] the root: main.py
    paths += [[group, sub] for group, subs in GROUPS.items() for sub in subs]
    found = {}
    for path in paths:
        shown = runner.invoke(cli, [*path, "--help"], terminal_width=200)
        assert shown.exit_code == 0, path
        found[" ".join(path) or "main"] = set(OPTION.findall(shown.output))
    return found


def mentions(text: str) -> list[tuple[str, str, str]]:
    """(command, option, line) for each ``dataprep CMD ... --option`` on one line."""
    out = []
    for line in text.splitlines():
        for segment in line.split("dataprep ")[1:]:
            words = segment.split()
            if not words:
                continue
            command = " ".join(words[:2]) if words[0] in GROUPS and len(words) > 1 else words[0]
            command = command.strip("`.,:;)")
            rest = re.split(r"`|\||&&|;", segment, maxsplit=1)[0]
            out += [(command, option, line) for option in OPTION.findall(rest)]
    return out


def test_every_option_the_readme_and_docs_name_exists():
    options = help_options()
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(mentions((ROOT / "README.md").read_text())) > 30  # the parsing finds them
    assert mentions("dataprep convert a b --to lmdb | dataprep x --y") == [
        ("convert", "--to", "dataprep convert a b --to lmdb | dataprep x --y"),
        ("x", "--y", "dataprep convert a b --to lmdb | dataprep x --y"),
    ]
    wrong = []
    for document in documents:
        for command, option, line in mentions(document.read_text()):
            if command in options and option not in options[command]:
                wrong.append(f"{document.name}: dataprep {command} has no {option}: {line.strip()}")
    assert wrong == []


def _literals(path: Path) -> list[str]:
    import ast

    tree = ast.parse(path.read_text())
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_every_option_a_message_names_exists():
    """A command's own messages name its options; the core's name some command's."""
    options = help_options()
    every = set().union(*options.values())
    wrong = []
    for path in sorted((ROOT / "dataprep").rglob("*.py")):
        own = options.get(path.stem) if path.parent.name == "cli" else None
        if path.parent.name == "cli" and path.stem in GROUPS:
            own = set().union(*(options[f"{path.stem} {sub}"] for sub in GROUPS[path.stem]))
        for text in _literals(path):
            for option in OPTION.findall(text):
                if option not in (own if own is not None else every):
                    wrong.append(f"{path.relative_to(ROOT)}: {option} in {text[:80]!r}")
    assert wrong == []
