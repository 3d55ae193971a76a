"""Where the analyses write: `<workdir>/analysis/<name>.json` and `<name>.png`."""

from __future__ import annotations

import json
import os

from matplotlib.figure import Figure  # the object API renders with Agg; no pyplot, no display needed


def analysis_dir(workdir: str) -> str:
    path = os.path.join(workdir, "analysis")
    os.makedirs(path, exist_ok=True)
    return path


def write(workdir: str, name: str, result: dict, figure: Figure) -> tuple[str, str]:
    """Writes `result` as `<name>.json` and `figure` as `<name>.png`; returns both paths."""
    json_path = os.path.join(analysis_dir(workdir), f"{name}.json")
    with open(json_path, "w") as f:
        json.dump(result, f, indent=2)
    png_path = os.path.join(analysis_dir(workdir), f"{name}.png")
    figure.savefig(png_path, dpi=110, bbox_inches="tight")
    return json_path, png_path
