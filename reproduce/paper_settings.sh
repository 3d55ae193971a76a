#!/usr/bin/env bash
# docs/results.md, "At the paper's settings": all four networks trained and evaluated at the paper's settings
# (T = 20, 64x64, batch 16, Adam 3e-3 decayed x0.1 at half, weight decay 5e-4: configs/voc_*.py) on
# the real-photograph VOC-layout data of reproduce/make_photo_voc.py, at a width and a number of steps
# that fit this 2-core CPU. Each spiking network is also trained at T = 4 with everything else the
# same, to show what T = 20 changes. Prints a table and, with RESULTS, writes it for the docs.
#
#   reproduce/paper_settings.sh [RUNS_DIR]      (default runs/paper_settings)
#
#   WIDTH     multiplier on every hidden channel count (default 0.25)
#   STEPS     training steps of every run (default 600: 16 epochs; the learning rate drops at half)
#   DATA      where the photograph dataset goes (default /tmp/photo_voc; made if missing)
#   RESULTS   if set, a JSON file (docs/results/paper_settings.json for the docs) that receives the
#             table, the spikes per layer, the energy ratios, the times and the machine.
# Finished runs in RUNS_DIR are not retrained (train.py resumes), so a second call only re-evaluates;
# after a change to the code or the settings, give it an empty directory. Needs
# `pip install -e ".[photos]"`. Run from the repository root. On this repository's 2-core CPU the
# defaults take about an hour; docs/results.md shows how long the last run took.
set -euo pipefail

RUNS=${1:-runs/paper_settings}
WIDTH=${WIDTH:-0.25}
STEPS=${STEPS:-600}
DATA=${DATA:-/tmp/photo_voc}
PYTHON=${PYTHON:-python}
mkdir -p "$RUNS"
TIMINGS=$RUNS/timings.jsonl
source "$(dirname "$0")/timed.sh"

if ! voc_found "$DATA"; then
  timed make "$RUNS" -m reproduce.make_photo_voc --out "$DATA"
fi
COMMON=(--config.dataset.root="$DATA" --config.model.width="$WIDTH" --config.num_train_steps="$STEPS")

for arch in deeplab fcn; do
  config=configs/voc_$arch.py
  snn=$RUNS/${arch}_snn ann=$RUNS/${arch}_ann snn_t4=$RUNS/${arch}_snn_t4
  echo "== $arch: training $snn, $ann and $snn_t4"
  timed "train ${arch}_snn" "$snn" train.py --config "$config" --workdir "$snn" "${COMMON[@]}"
  timed "train ${arch}_ann" "$ann" train.py --config "$config" --workdir "$ann" --config.model.name="$arch" \
    "${COMMON[@]}"
  timed "train ${arch}_snn_t4" "$snn_t4" train.py --config "$config" --workdir "$snn_t4" --config.model.timesteps=4 \
    "${COMMON[@]}"
  echo "== $arch: evaluation, and the energy analysis of the spiking network at T = 20"
  timed "eval ${arch}_snn" "$snn" evaluate.py --config "$config" --workdir "$snn" "${COMMON[@]}" \
    --analyses=energy --compare_workdir="$ann"
  timed "eval ${arch}_ann" "$ann" evaluate.py --config "$config" --workdir "$ann" --config.model.name="$arch" \
    "${COMMON[@]}"
  timed "eval ${arch}_snn_t4" "$snn_t4" evaluate.py --config "$config" --workdir "$snn_t4" \
    --config.model.timesteps=4 "${COMMON[@]}"
done

"$PYTHON" -m reproduce.results paper "$RUNS" ${RESULTS:+--out "$RESULTS"} | tee "$RUNS/results.md"
