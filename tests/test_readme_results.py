"""README.md and the pages of docs/ show what docs/results/*.json holds, and their commands paste whole.

The result files are written by reproduce/regenerate_results.sh from runs of the code; reproduce/results.py
renders the `<!-- results: NAME -->` blocks of README and docs/ from them. When a test here fails after
new results, run `python -m reproduce.results readme` and commit both; a config's hand-written
"Expected" line is corrected by hand.
"""

import difflib
import re

import pytest
from conftest import REPO

from reproduce import results

DOCUMENTS = results.documents()
CONFIGS = sorted(path for path in (REPO / "configs").glob("*.py") if path.read_text().startswith('"""'))
DEMO_CONFIGS = [path for path in CONFIGS if path.stem.split("_")[0] in ("shapes", "events")]
STREAM_CONFIGS = [path for path in DEMO_CONFIGS if path.stem.endswith("_stream")]
EMBEDDED_CONFIGS = [path for path in DEMO_CONFIGS if path not in STREAM_CONFIGS]
name_of = lambda path: str(path.relative_to(REPO))


def test_readme_and_docs_show_the_numbers_of_the_committed_result_files():
    stale = {path: (now, rendered) for path, (now, rendered) in results.rendered_files().items() if now != rendered}
    diffs = [
        "".join(difflib.unified_diff(now.splitlines(True), rendered.splitlines(True), name_of(path), "rendered"))
        for path, (now, rendered) in stale.items()
    ]
    assert not stale, "run: python -m reproduce.results readme\n" + "\n".join(diffs)


def test_readme_and_every_docs_page_are_rendered():
    assert {path.name for path in DOCUMENTS} >= {"README.md", "results.md", "performance.md", "library.md"}
    assert all(path.parent in (REPO, REPO / "docs") for path in DOCUMENTS)


@pytest.mark.parametrize("path", DOCUMENTS, ids=name_of)
def test_every_results_block_is_known_and_closed(path):
    text = path.read_text()
    names = re.findall(r"^<!-- results: (\S+) -->$", text, flags=re.M)
    assert len(names) == len(re.findall(r"^<!-- /results -->$", text, flags=re.M))
    assert set(names) <= set(results.BLOCKS)


def test_every_block_is_shown_once_and_every_result_file_it_reads_is_committed():
    names = [n for path in DOCUMENTS for n in re.findall(r"^<!-- results: (\S+) -->$", path.read_text(), flags=re.M)]
    assert sorted(names) == sorted(results.BLOCKS), "a block shown twice, or never"
    shown = {
        "embedded_deeplab",
        "embedded_fcn",
        "photo_check",
        "performance",
        "paper_settings",
        "sparsity_demo",
        "sparsity_paper",
        "stream_training",
    }
    assert shown <= set(results.load_results()), "a result file the blocks render from is missing"


@pytest.mark.parametrize("path", DOCUMENTS, ids=name_of)
def test_no_measured_number_is_written_by_hand_outside_the_blocks(path):
    """Spot checks for what went stale before: times, MIoUs and energies written by hand."""
    outside = re.sub(r"<!-- results: \S+ -->.*?<!-- /results -->", "", path.read_text(), flags=re.S)
    assert not re.search(r"\b\d+ min \d+ s\b|\babout \d+ minutes\b|\bMIoU of 0\.\d+|\b\d+(\.\d+)? s each\b", outside)
    decimals = set(re.findall(r"\b0\.\d{3}\b", outside)) - {"0.125"}  # 0.125: a width
    assert not decimals, f"three-decimal numbers (MIoUs?) outside the blocks: {decimals}"
    assert "uJ" not in outside and "µJ" not in outside


@pytest.mark.parametrize("path", EMBEDDED_CONFIGS, ids=lambda p: p.name)
def test_the_expected_line_of_an_embedded_config_matches_the_result_files(path):
    """One hand-written line per config: its numbers must be those of docs/results/embedded_<arch>.json."""
    data, arch = path.stem.split("_")
    expected = re.findall(r"^Expected: .*$", path.read_text().split('"""')[1], flags=re.M)
    assert len(expected) == 1, f"{path.name}: one 'Expected:' line in the docstring"
    found = re.fullmatch(
        r"Expected: validation MIoU (0\.\d{3}) after ([\d,]+) steps \(the ANN twin: (0\.\d{3})\), "
        r"~(\d+) min on (\d+) CPU cores\.",
        expected[0],
    )
    assert found, f"{path.name}: {expected[0]!r} is not in the form the test reads"
    embedded = results.load_results()[f"embedded_{arch}"]
    snn, ann = results.run_of(embedded, data, "snn"), results.run_of(embedded, data, "ann")
    seconds = embedded["timings"][f"train {data}_snn"]["seconds"]
    assert found.group(1) == f"{snn['miou']:.3f}" and found.group(3) == f"{ann['miou']:.3f}"
    assert found.group(2) == f"{snn['steps']:,}"
    assert abs(int(found.group(4)) - seconds / 60) <= 1, f"training took {results.duration(seconds)}"
    assert int(found.group(5)) == embedded["machine"]["cpus"]


def expected_line(path):
    """The docstring's "Expected:" paragraph, its lines joined."""
    expected = re.findall(r"^Expected: .*(?:\n.+)*", path.read_text().split('"""')[1], flags=re.M)
    assert len(expected) == 1, f"{path.name}: one 'Expected:' paragraph in the docstring"
    return " ".join(expected[0].split())


@pytest.mark.parametrize("path", STREAM_CONFIGS, ids=lambda p: p.name)
def test_the_expected_line_of_a_stream_config_matches_the_result_file(path):
    """Its numbers must be those of docs/results/stream_training.json, against the window-trained run's."""
    arch = path.stem.split("_")[1]
    line = expected_line(path)
    found = re.fullmatch(
        r"Expected: validation MIoU (0\.\d{3}) in windows and (0\.\d{3}) streamed after ([\d,]+) steps "
        r"\(trained in windows: (0\.\d{3}) and (0\.\d{3})\), ~(\d+) min on (\d+) CPU cores\.",
        line,
    )
    assert found, f"{path.name}: {line!r} is not in the form the test reads"
    result = results.load_results()["stream_training"]
    streams, windows = (result["runs"][f"{arch}_{mode}"] for mode in ("streams", "windows"))
    shown = lambda run: (
        f"{run['analyses']['streaming']['windowed_miou']:.3f}",
        f"{run['analyses']['streaming']['continuous_miou']:.3f}",
    )
    assert found.group(1, 2) == shown(streams) and found.group(4, 5) == shown(windows)
    assert found.group(3) == f"{streams['steps']:,}"
    seconds = result["timings"][f"train {arch}_streams"]["seconds"]
    assert abs(int(found.group(6)) - seconds / 60) <= 1, f"training took {results.duration(seconds)}"
    assert int(found.group(7)) == result["machine"]["cpus"]


def command_blocks(text):
    """The command lines of the Markdown code blocks without a language (not the Python ones)."""
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)
    return [block.splitlines() for language, block in blocks if language == ""]


@pytest.mark.parametrize("path", [*DOCUMENTS, *CONFIGS], ids=name_of)
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
