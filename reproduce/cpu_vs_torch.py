"""Our train step against the PyTorch reference, alternating in one run (for noisy, shared machines).

    pip install -e ".[bench]"
    python -m reproduce.cpu_vs_torch --batch 2 --rounds 5
    python -m reproduce.cpu_vs_torch --variant jax --variant remat:model.remat=True \\
        --variant bf16:model.dtype=bfloat16 --variant unfused:model.fused=False

Run from the repository root. The reference is `reproduce/torch_reference.py` (`--reference` names
another file defining `make_step(batch, timesteps, size, width, style)`).

Each implementation runs in its own long-lived worker process (compiled once); the driver then
alternates them round by round, `--steps` timed train steps each, so that load from other users
falls on all of them alike. A variant is `name[:field=value,...]`: config overrides of
`configs/voc_deeplab.py` (batch, T and size come from the flags). Prints one line per round, then one
JSON object with the best and median seconds per step of each implementation and their ratios to the reference.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(REPO, "reproduce", "torch_reference.py")


def torch_worker(args) -> callable:
    """The reference's train step in the requested style and sizes, as a zero-argument function."""
    import runpy

    return runpy.run_path(args.reference)["make_step"](args.batch, args.timesteps, args.size, 1.0, args.style)


def jax_worker(args) -> callable:
    """The training pipeline's compiled train step (`snnseg_jax.benchmark.Steps`) with the variant's
    config overrides."""
    import jax

    from configs import voc_deeplab
    from snnseg_jax import benchmark, formulations

    formulations.keep_freed_memory()
    config = voc_deeplab.get_config()
    config.batch_size, config.model.timesteps, config.dataset.image_size = args.batch, args.timesteps, args.size
    for override in filter(None, args.overrides.split(",")):
        field, value = override.split("=", 1)
        *path, leaf = field.split(".")
        node = config
        for name in path:
            node = node[name]
        try:
            node[leaf] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            node[leaf] = value
    steps = benchmark.Steps(config)
    return lambda: jax.block_until_ready(steps.train_once())


def serve(step) -> None:
    """Worker loop: one warm-up step, then on each input line `n` time n steps and print, for each,
    the wall seconds and the process's CPU seconds (all threads; less sensitive to other users)."""
    step()
    print("ready", flush=True)
    for line in sys.stdin:
        seconds = []
        for _ in range(int(line)):
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            seconds.append((time.perf_counter() - start, time.process_time() - start_cpu))
        print(json.dumps(seconds), flush=True)


class Worker:
    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reproduce.cpu_vs_torch", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []

    def wait_ready(self) -> None:
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"worker {self.name} failed to start (exit {self.process.wait()})")

    def run(self, steps: int) -> float:
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        wall, cpu = zip(*json.loads(self.process.stdout.readline()))
        self.seconds += wall
        self.cpu_seconds += cpu
        return min(wall)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def parse_variant(text: str) -> tuple[str, str]:
    name, _, overrides = text.partition(":")
    return name, overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=REFERENCE, help="path of the PyTorch reference (torch_reference.py)")
    parser.add_argument("--style", default="loop", help="reference style: loop (the authors') or folded")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--timesteps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per implementation and round")
    parser.add_argument("--variant", action="append", default=[], help="name[:field=value,...]")
    parser.add_argument("--worker", choices=["torch", "jax"], help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(torch_worker(args) if args.worker == "torch" else jax_worker(args))
        return

    common = [
        "--reference",
        os.path.abspath(args.reference),
        "--style",
        args.style,
        "--batch",
        str(args.batch),
        "--timesteps",
        str(args.timesteps),
        "--size",
        str(args.size),
    ]
    workers = [Worker(f"torch-{args.style}", [*common, "--worker", "torch"])]
    for name, overrides in map(parse_variant, args.variant or ["jax"]):
        workers.append(Worker(name, [*common, "--worker", "jax", "--overrides", overrides]))
    for worker in workers:  # one at a time, so that compiling does not overlap the others' warm-up
        worker.wait_ready()
    reference = workers[0]
    for round_index in range(args.rounds):
        best = {worker.name: worker.run(args.steps) for worker in workers}
        print(
            f"round {round_index}: "
            + ", ".join(
                f"{name} {seconds:.3f}s ({seconds / best[reference.name]:.2f}x)" for name, seconds in best.items()
            ),
            flush=True,
        )
    for worker in workers:
        worker.close()
    result = {
        "batch": args.batch,
        "timesteps": args.timesteps,
        "size": args.size,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "threads": os.cpu_count(),
    }
    for worker in workers:
        result[worker.name] = {
            "best_seconds": min(worker.seconds),
            "median_seconds": statistics.median(worker.seconds),
            "best_cpu_seconds": min(worker.cpu_seconds),
        }
        if worker is not reference:
            result[worker.name]["best_ratio"] = min(worker.seconds) / min(reference.seconds)
            result[worker.name]["median_ratio"] = statistics.median(worker.seconds) / statistics.median(
                reference.seconds
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
