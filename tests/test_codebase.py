"""Properties of the code itself that reviews asked for and tests keep."""

import ast
import pathlib

import snnseg_jax

PACKAGE = pathlib.Path(snnseg_jax.__file__).parent


def test_no_function_in_the_package_is_over_60_lines():
    long = [f"{path.relative_to(PACKAGE)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]
    assert not long
