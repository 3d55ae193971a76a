"""What XLA made of the train step, read from its optimized HLO: time loops, copies in them, conv layouts.

    python -m reproduce.hlo_report <dump dir or .txt file> [...]     (one JSON object per module)

Reads the HLO text of a module after optimizations (`XLA_FLAGS=--xla_dump_to=<dir>
--xla_dump_hlo_as_text` writes `<dir>/*.jit_train_step*after_optimizations.txt`; a compiled
step's `.as_text()` is the same text) and reports:
- `loops`: every while loop, the layer it belongs to (from its op_name), its trip count if XLA knows
  it (`known_trip_count`; "unknown" otherwise: a loop XLA cannot unroll or pipeline), and the copies
  and transposes it runs per iteration (instructions of its body and of the fusions it calls; scalar
  copies left out), with the bytes they move;
- `convolutions`: every convolution (XLA's `convolution`, or a cuDNN custom call on GPU) by operand
  dtype, dimension labels (`b01f_01io->b01f` is NHWC; `bf01` NCHW) and the layouts XLA chose;
- totals: instructions, loops with an unknown trip count, copy and transpose bytes in loops.
`reproduce/gpu_first_look.sh` runs it on the train step in float32 and bfloat16.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import sys

_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\) -> .* \{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([\w\-]+)\(")  # name, shape, opcode
_CALLED = re.compile(r"(?:calls|body|condition|to_apply|true_computation|false_computation)=%?([\w.\-]+)")
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\](?:\{([\d,]*)\})?")
_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
}


def computations(text: str) -> dict[str, list[str]]:
    """The instruction lines of each computation of an HLO module, by name."""
    found, current = {}, None
    for line in text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = found.setdefault(header.group(1), [])
        elif line.startswith("}"):
            current = None
        elif current is not None and _INSTRUCTION.match(line):
            current.append(line)
    return found


def shape_bytes(shape: str) -> int:
    """Bytes of an array shape such as `f32[2,32,32,8]{3,2,1,0}` (0 for a tuple or a token)."""
    match = _SHAPE.match(shape)
    if not match or match.group(1) not in _BYTES:
        return 0
    size = 1
    for dim in filter(None, match.group(2).split(",")):
        size *= int(dim)
    return size * _BYTES[match.group(1)]


def reachable(name: str, comps: dict[str, list[str]]) -> list[str]:
    """`name` and every computation it calls, directly or not (nested loops included)."""
    seen, todo = [], [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in comps:
            continue
        seen.append(current)
        todo += [called for line in comps[current] for called in _CALLED.findall(line)]
    return seen


def loops(text: str) -> list[dict]:
    """Each while loop: its layer, trip count, and the copies and transposes of one iteration."""
    comps, found = computations(text), []
    for lines in comps.values():
        for line in lines:
            instruction = _INSTRUCTION.match(line)
            if instruction.group(3) != "while":
                continue
            body = re.search(r"body=%?([\w.\-]+)", line).group(1)
            trips = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', line)
            op_name = re.search(r'op_name="([^"]+)"', line)
            moves = collections.Counter()
            for inner in (line for comp in reachable(body, comps) for line in comps[comp]):
                moved = _INSTRUCTION.match(inner)
                if moved.group(3) in ("copy", "transpose") and shape_bytes(moved.group(2)) > _BYTES["f64"]:
                    moves[moved.group(3)] += 1
                    moves[f"{moved.group(3)}_bytes"] += shape_bytes(moved.group(2))
            found.append(
                {
                    "loop": instruction.group(1),
                    "op_name": op_name.group(1) if op_name else "",
                    "trip_count": int(trips.group(1)) if trips else "unknown",
                    "copies": moves["copy"],
                    "copy_bytes": moves["copy_bytes"],
                    "transposes": moves["transpose"],
                    "transpose_bytes": moves["transpose_bytes"],
                }
            )
    return found


def convolutions(text: str) -> dict[str, int]:
    """`{"<op> <dtype> <dim_labels> out{layout}": count}` over the module's convolutions."""
    found = collections.Counter()
    for line in text.splitlines():
        instruction = _INSTRUCTION.match(line)
        target = re.search(r'custom_call_target="([^"]*conv[^"]*)"', line)
        if not instruction or not (instruction.group(3) == "convolution" or target):
            continue
        labels = re.search(r"dim_labels=([\w>\-]+)", line)
        shape = _SHAPE.match(instruction.group(2).lstrip("("))
        op = target.group(1) if target else "convolution"
        found[
            f"{op} {shape.group(1) if shape else '?'} {labels.group(1) if labels else '?'} "
            f"out{{{shape.group(3) if shape else ''}}}"
        ] += 1
    return dict(found)


def report(text: str) -> dict:
    """The loops, the convolutions and the totals of one HLO module's text."""
    found = loops(text)
    return {
        "instructions": sum(len(lines) for lines in computations(text).values()),
        "loops": len(found),
        "loops_with_unknown_trip_count": sum(loop["trip_count"] == "unknown" for loop in found),
        "copy_bytes_in_loops": sum(loop["copy_bytes"] for loop in found),
        "transpose_bytes_in_loops": sum(loop["transpose_bytes"] for loop in found),
        "convolutions": convolutions(text),
        "loop_details": found,
    }


def module_files(path: str) -> list[str]:
    """The optimized train step modules under a dump directory (or `path` itself, a file)."""
    if os.path.isfile(path):
        return [path]
    return sorted(glob.glob(os.path.join(path, "*train_step*after_optimizations.txt")))


def main(paths: list[str]) -> None:
    files = [f for path in paths for f in module_files(path)]
    if not files:
        raise SystemExit(f"no *train_step*after_optimizations.txt under {' '.join(paths)}")
    for path in files:
        with open(path) as f:
            print(json.dumps({"module": os.path.basename(path), **report(f.read())}))


if __name__ == "__main__":
    main(sys.argv[1:])
