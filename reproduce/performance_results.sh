#!/usr/bin/env bash
# The measurements of docs/performance.md: the paper's Spiking-DeepLab (configs/voc_deeplab.py:
# 64x64, T=20, width 1, float32) timed at batch 2, its train step's memory at batch 16 in four
# settings, each faster formulation switched off in turn, the time of one `stream.step` at batch 1
# against the whole window (paper network and the demos), and, where torch is installed, the
# comparison with the PyTorch reference. No dataset is read.
#
#   reproduce/performance_results.sh [OUT_DIR]    (default runs/performance)
#
#   REFERENCE  the PyTorch reference (default reproduce/torch_reference.py; needs torch: pip install -e ".[bench]")
#   RESULTS    if set, a JSON file (docs/results/performance.json for the docs) that receives all
#              of it, the times and the machine.
# Each command's JSON goes to OUT_DIR/<name>.json. Run from the repository root.
set -euo pipefail

OUT=${1:-runs/performance}
REFERENCE=${REFERENCE:-reproduce/torch_reference.py}
mkdir -p "$OUT"
TIMINGS=$OUT/timings.jsonl
source "$(dirname "$0")/timed.sh"
benchmark=(-m snnseg_jax.benchmark --config configs/voc_deeplab.py)

timed benchmark "$OUT" "${benchmark[@]}" --config.batch_size=2 | tee "$OUT/benchmark.json"
for setting in default model.remat=True model.dtype=bfloat16 model.fused=False; do
  overrides=()
  if [[ $setting != default ]]; then overrides=("--config.$setting"); fi
  timed "memory $setting" "$OUT" "${benchmark[@]}" --compile_only "${overrides[@]}" | tee "$OUT/memory_$setting.json"
done
timed ablation "$OUT" "${benchmark[@]}" --config.batch_size=2 --ablate_tuning --repeats=6 | tee "$OUT/ablation.json"
for name in voc_deeplab shapes_deeplab shapes_fcn events_deeplab events_fcn; do  # stream.step against the window
  timed "stream $name" "$OUT" -m snnseg_jax.benchmark --config "configs/$name.py" --stream --repeats=10 \
    | tee "$OUT/stream_$name.json"
done
if "${PYTHON:-python}" -c "import torch" 2>/dev/null && [[ -f $REFERENCE ]]; then
  timed torch "$OUT" -m reproduce.cpu_vs_torch --reference "$REFERENCE" --batch 2 --rounds 8 --steps 2 \
    | tee "$OUT/torch.json"
else
  echo "torch or $REFERENCE missing: no comparison with the PyTorch reference"
  rm -f "$OUT/torch.json"
fi
"${PYTHON:-python}" -m reproduce.results performance "$OUT" ${RESULTS:+--out "$RESULTS"}
