"""Runs the PyTorch reference script, written for the CPU, on a GPU unchanged.

    python3 -m reproduce.torch_on_cuda reproduce/torch_reference.py --styles loop --batch 16

Sets CUDA as torch's default device (so the script's tensors and modules live there) and makes
`time.perf_counter` wait for the GPU first (so its timer measures finished work), then runs the
script as `__main__` with the remaining arguments. `--device cpu` skips both (a rehearsal).
"""

import argparse
import runpy
import sys
import time

import torch


def synchronized(clock):
    """`clock`, called after all queued CUDA work has finished."""

    def read():
        torch.cuda.synchronize()
        return clock()

    return read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("script", help="path of torch_reference.py")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args, script_args = parser.parse_known_args()
    if args.device == "cuda":
        torch.set_default_device("cuda")
        time.perf_counter = synchronized(time.perf_counter)
        print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", file=sys.stderr)
    sys.argv = [args.script, *script_args]
    runpy.run_path(args.script, run_name="__main__")


if __name__ == "__main__":
    main()
