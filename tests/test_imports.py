"""The package's dependencies run one way: steps, then set-up (`experiment`), then training and
evaluation, then the analyses; no module imports the project from inside a function to hide a cycle."""

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "snnseg_jax"


def project_imports(node: ast.AST) -> list[str]:
    """The project modules that an import statement `node` names (none for other statements)."""
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""] if node.level or (node.module or "").startswith("snnseg_jax") else []
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.startswith("snnseg_jax")]
    return []


def test_training_imports_no_analysis():
    code = "import sys, snnseg_jax.train; print(sorted(m for m in sys.modules if m.startswith('snnseg_jax.analysis')))"
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "[]"


def test_no_module_imports_the_project_inside_a_function():
    local = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [name for node in ast.walk(function) for name in project_imports(node)]
                local += [f"{path.relative_to(PACKAGE)}: {name}" for name in names]
    assert local == []


def test_images_import_nothing_of_the_project():
    tree = ast.parse((PACKAGE / "images.py").read_text())
    assert [name for node in ast.walk(tree) for name in project_imports(node)] == []
