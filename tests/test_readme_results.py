"""README.md and the embedded configs' docstrings show what docs/results/*.json holds, and their commands paste whole.

The result files are written by scripts/regenerate_results.sh from runs of the code; scripts/results.py
renders README's `<!-- results: NAME -->` blocks and the configs' "Expected" lines from them. When a
test here fails after new results, run `python scripts/results.py readme` and commit both.
"""

import difflib
import re

import pytest
from conftest import REPO

from scripts import results

CONFIGS = sorted(path for path in (REPO / "configs").glob("*.py") if path.read_text().startswith('"""'))


def test_readme_and_config_docstrings_show_the_numbers_of_the_committed_result_files():
    stale = {path: (now, rendered) for path, (now, rendered) in results.rendered_files().items() if now != rendered}
    diffs = [
        "".join(difflib.unified_diff(now.splitlines(True), rendered.splitlines(True), str(path), "rendered"))
        for path, (now, rendered) in stale.items()
    ]
    assert not stale, "run: python scripts/results.py readme\n" + "\n".join(diffs)


def test_every_results_block_of_the_readme_is_rendered_and_every_result_file_is_shown():
    text = (REPO / "README.md").read_text()
    names = re.findall(r"^<!-- results: (\S+) -->$", text, flags=re.M)
    assert len(names) == len(re.findall(r"^<!-- /results -->$", text, flags=re.M)) and set(names) <= set(results.BLOCKS)
    shown = {"embedded_deeplab", "photo_check", "performance"}  # what the blocks read, besides embedded_fcn
    assert shown <= set(results.load_results()), "a result file README renders from is missing"


def test_readme_has_no_number_of_a_result_outside_its_blocks():
    """Spot checks for what went stale before: measured numbers written by hand."""
    outside = re.sub(r"<!-- results: \S+ -->.*?<!-- /results -->", "", (REPO / "README.md").read_text(), flags=re.S)
    assert not re.search(r"\b\d+ min \d+ s\b|\babout \d+ minutes\b|\bMIoU of 0\.\d+", outside)
    assert "uJ" not in outside


def command_blocks(text):
    """The command lines of README's code blocks (not the Python ones), and of indented docstring commands."""
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)
    return [block.splitlines() for language, block in blocks if language == ""]


@pytest.mark.parametrize("path", [REPO / "README.md", *CONFIGS], ids=lambda p: p.name)
def test_commands_paste_whole(path):
    """A command that goes on over the next line ends in a backslash, so that pasted it runs whole."""
    text = path.read_text()
    if path.suffix == ".py":
        docstring = text.split('"""')[1]
        lines = [[line for line in docstring.splitlines() if line.startswith("    ")]]
    else:
        lines = command_blocks(text)
    for block in lines:
        for before, line in zip(block, block[1:]):
            indent = lambda s: len(s) - len(s.lstrip())
            if line.strip() and indent(line) > indent(before) and before.lstrip().startswith(("python", "XLA_FLAGS")):
                assert before.endswith("\\"), f"{path.name}: {before!r} goes on without a backslash"
