"""The layer tables: what is derived from them, and that they are the only place layers are named."""

import ast
import pathlib
import re

import pytest

from snnseg_jax import architecture
from snnseg_jax.architecture import INPUT, Architecture, Layer

PACKAGE = pathlib.Path(architecture.__file__).parent
TABLES = {
    "deeplab": architecture.deeplab("paper"),
    "released": architecture.deeplab("released"),
    "fcn": architecture.fcn(),
}


def test_deeplab_table_is_the_papers():
    table = TABLES["deeplab"]
    units = [
        (layer.name, layer.channels, layer.kernel, layer.dilation)
        for layer in table.layers
        if layer.op == architecture.UNIT
    ]
    assert units == [
        ("conv1_1", 64, 3, 1),
        ("conv1_2", 64, 3, 1),
        ("conv2_1", 128, 3, 1),
        ("conv2_2", 128, 3, 1),
        ("conv3_1", 256, 3, 1),
        ("conv3_2", 256, 3, 2),
        ("conv3_3", 256, 3, 2),
        ("fc6", 1024, 3, 12),
        ("fc7", 1024, 1, 1),
    ]
    assert [layer.op for layer in table.layers].count(architecture.POOL) == 2
    assert table.layers[-1] == Layer("output", architecture.CLASSES, ("fc7",), None, 1)
    assert [layer.name for layer in TABLES["released"].layers if layer.op == architecture.UNIT][-1] == "fc6"


def test_fcn_decoder_wiring():
    table = TABLES["fcn"]
    assert table["lif_up0"].inputs == ("up0", "skip_c") and table["up0"].inputs == ("skip_d",)
    assert table["skip_d"].inputs == ("fc7",) and table["skip_c"].inputs == ("conv3_3",)
    assert table["lif_up1"].inputs == ("up1", "skip_b") and table["skip_b"].inputs == ("conv2_2",)
    assert table["logits"].inputs == ("up2", "skip_a") and table["skip_a"].inputs == ("conv1_2",)
    assert all(table[name].bias and table[name].kernel == 1 for name in ("skip_a", "skip_b", "skip_c", "skip_d"))
    assert [layer.dilation for layer in table.layers if layer.op == architecture.UNIT] == [1] * 9


def test_derived_facts():
    deeplab, fcn = TABLES["deeplab"], TABLES["fcn"]
    assert deeplab.averaged(spiking=True) == {"output"}
    assert fcn.averaged(spiking=True) == {"up2", "skip_a", "logits"}
    assert fcn.averaged(spiking=False) == {layer.name for layer in fcn.layers[fcn.layers.index(fcn["fc6"]) :]}
    assert (deeplab.side_multiple(), fcn.side_multiple()) == (1, 8)
    assert (fcn.source("conv1_1"), fcn.source("conv2_1"), fcn.source("fc6"), fcn.source("up0")) == (
        INPUT,
        "conv1_2",
        "conv3_3",
        "skip_d",
    )
    assert fcn.driven_neurons("up0") == "lif_up0" and fcn.driven_neurons("skip_c") is None
    assert fcn.driven_neurons("conv1_1") == "conv1_1" and deeplab.driven_neurons("output") is None


def test_walk_sums_the_inputs_in_order():
    table = Architecture(
        "toy",
        (
            Layer("a", architecture.UNIT, (INPUT,), 1),
            Layer("b", architecture.UNIT, ("a",), 1),
            Layer("c", architecture.SUM, ("b", INPUT)),
        ),
        frames_meet="c",
    )
    trace = architecture.walk(table, "x", lambda layer, inputs: f"{layer.name}({'+'.join(inputs)})")
    assert trace == "c(b(a(x))+x)"


@pytest.mark.parametrize(
    "layers",
    [
        (Layer("a", "conv", (INPUT,)),),  # unknown op
        (Layer("a", architecture.POOL, (INPUT,)), Layer("a", architecture.POOL, ("a",))),  # repeated name
        (Layer("a", architecture.POOL, ("b",)),),  # input not defined before
    ],
)
def test_bad_tables_are_refused(layers):
    with pytest.raises(ValueError, match="bad layer"):
        Architecture("bad", layers, frames_meet="a")


def _layer_names() -> set[str]:
    return {layer.name for table in TABLES.values() for layer in table.layers}


def test_layers_are_named_only_in_the_tables():
    """Outside architecture.py no module names a layer, in code or in prose (a word like `fc6`), so
    adding or renaming a layer cannot leave a consumer out of step with the networks."""
    names = _layer_names()
    distinctive = re.compile(r"\b(" + "|".join(sorted(n for n in names if re.search(r"\d", n))) + r")\b")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "architecture.py":
            continue
        text = path.read_text()
        offenders += [f"{path.name}: {m.group()}" for m in distinctive.finditer(text)]
        offenders += [
            f"{path.name}: {node.value!r}"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.Constant) and node.value in names
        ]
    assert not offenders


# The keys of Flax's variable trees of the networks: collections, submodules and parameters.
PARAMETER_KEYS = {"params", "batch_stats", "conv", "bn", "bntt", "kernel", "bias", "scale", "mean", "var"}


def _parameter_lookups(tree: ast.AST) -> list[str]:
    """Subscripts and `.get` calls with one of `PARAMETER_KEYS` as a literal key, and subscripts of a
    `.params` or `.batch_stats` attribute."""
    found = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Subscript):
            key = node.slice.value if isinstance(node.slice, ast.Constant) else None
            if isinstance(node.value, ast.Attribute) and node.value.attr in ("params", "batch_stats"):
                key = node.value.attr
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            key = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
        if key in PARAMETER_KEYS:
            found.append(f"line {node.lineno}: {key!r}")
    return found


def test_parameter_lookups_are_found():
    code = 'a = v["params"][name]; b = run.state.params[name]; c = v.get("batch_stats", {}); d = x["logits"]'
    found = sorted(hit.split(": ")[1] for hit in _parameter_lookups(ast.parse(code)))
    assert found == ["'batch_stats'", "'params'", "'params'"]


def test_only_the_flax_modules_look_up_parameters():
    """Stepping and the analyses reach parameters only through the modules' methods (`model.apply(...,
    method=...)`), so a change to how a layer stores its parameters cannot leave them out of step."""
    paths = [PACKAGE / "stream.py", *sorted((PACKAGE / "analysis").glob("*.py"))]
    offenders = [f"{path.name} {hit}" for path in paths for hit in _parameter_lookups(ast.parse(path.read_text()))]
    assert not offenders
