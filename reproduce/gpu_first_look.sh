#!/usr/bin/env bash
# First look at a GPU (or TPU): what XLA compiles our train step to, in float32 and in bfloat16.
#
#   reproduce/gpu_first_look.sh
#
# For each dtype it dumps the optimized HLO of the train step (--xla_dump_to, compiling afresh:
# the compilation cache would skip the dump), times the step (snnseg_jax.benchmark), and reads the
# HLO with reproduce/hlo_report.py: the trip count XLA knows for each time loop ("unknown": a loop
# it cannot unroll or pipeline), the copies and transposes inside the loops and the bytes they
# move, the convolutions' layouts (NHWC is b01f_01io->b01f; XLA may choose NCHW for float32 on
# GPUs). Settings (device, sizes): reproduce/accelerator_env.sh; it stops with status 3 when JAX
# sees no such device. Results go to $OUT/gpu_first_look/ (else runs/gpu_first_look/):
# hlo_<dtype>/, <dtype>.log, <dtype>.json (the benchmark's), report_<dtype>.json; the last stdout
# line is a summary. Rehearsal on CPU with tiny sizes:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_BATCH=1 GPU_CHECK_TIMESTEPS=2 GPU_CHECK_SIZE=32 GPU_CHECK_WIDTH=0.125 reproduce/gpu_first_look.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source reproduce/accelerator_env.sh

LIMIT=${GPU_FIRST_LOOK_SECONDS:-240}  # per dtype
RESULTS=${OUT:+$OUT/gpu_first_look}
RESULTS=${RESULTS:-runs/gpu_first_look}
mkdir -p "$RESULTS"
check_devices "$RESULTS/devices.txt" || exit 3

for dtype in float32 bfloat16; do
  rm -rf "$RESULTS/hlo_$dtype"
  XLA_FLAGS="${XLA_FLAGS:-} --xla_dump_to=$RESULTS/hlo_$dtype --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*train_step.*" \
    JAX_ENABLE_COMPILATION_CACHE=false timeout "$LIMIT" "${OURS[@]}" --config.model.dtype=$dtype --repeats=5 \
    > "$RESULTS/$dtype.log" 2>&1
  echo "$dtype benchmark exit $?: $(tail -n 1 "$RESULTS/$dtype.log" | tee "$RESULTS/$dtype.json")" >&2
  "$PYTHON" -m reproduce.hlo_report "$RESULTS/hlo_$dtype" > "$RESULTS/report_$dtype.json"
  find "$RESULTS/hlo_$dtype" -type f ! -name '*train_step*after_optimizations.txt' -delete  # keep what was read
done

"$PYTHON" - "$RESULTS" <<'PY'
import json, sys
results = sys.argv[1]
summary = {"devices": open(f"{results}/devices.txt").read().strip()}
for dtype in ("float32", "bfloat16"):
    try:
        step = json.loads(open(f"{results}/{dtype}.json").read())
        summary[f"{dtype}_train_step_seconds"] = step["train_step_seconds"]
    except (OSError, ValueError, KeyError):
        summary[f"{dtype}_train_step_seconds"] = None
    try:
        report = json.loads(open(f"{results}/report_{dtype}.json").readline())
    except (OSError, ValueError):
        continue
    loops = report.pop("loop_details")
    summary[dtype] = {**{k: v for k, v in report.items() if k != "module"},
                      "trip_counts": sorted({str(l["trip_count"]) for l in loops}),
                      "loops_with_copies": sum(l["copies"] + l["transposes"] > 0 for l in loops)}
if summary["float32_train_step_seconds"] and summary["bfloat16_train_step_seconds"]:
    summary["bfloat16_vs_float32"] = summary["bfloat16_train_step_seconds"] / summary["float32_train_step_seconds"]
print(json.dumps(summary))
PY
