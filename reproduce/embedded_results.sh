#!/usr/bin/env bash
# Trains the spiking network and its ANN twin on the embedded `shapes` and `events` data, runs every
# analysis that applies to each, and prints the numbers of docs/results.md, "Results on the embedded data"
# (also written to <runs>/results.md).
#
#   reproduce/embedded_results.sh [RUNS_DIR] [extra overrides for every train.py / evaluate.py ...]
#
#   RUNS_DIR   where the four workdirs go (default runs/embedded); finished runs are not retrained
#              (train.py resumes from the newest checkpoint), so a second call only re-analyses.
#              After a change to the data or the configs, give it an empty directory.
#   ARCH       deeplab (default) or fcn: the configs shapes_$ARCH.py / events_$ARCH.py.
#   STEPS      if set, --config.num_train_steps=$STEPS (a quick check of the script itself).
#   FIGURES    if set, a folder (docs/embedded_results for the docs) that receives the figures the
#              docs/results.md shows, named <data>_<snn|ann>_<analysis>.png.
#   RESULTS    if set, a JSON file (docs/results/embedded_$ARCH.json for the docs) that receives
#              the numbers, the wall-clock times of the commands and the machine they ran on.
#
# Each command's wall-clock time and the load average around it go to <runs>/timings.jsonl (see
# reproduce/timed.sh); a training command that resumed a run is marked so.
# reproduce/regenerate_results.sh runs this for the docs. Run from the repository root.
set -euo pipefail

RUNS=${1:-runs/embedded}
shift || true
ARCH=${ARCH:-deeplab}
PYTHON=${PYTHON:-python}
OVERRIDES=("$@")
if [[ -n "${STEPS:-}" ]]; then
  OVERRIDES+=("--config.num_train_steps=$STEPS")
fi
mkdir -p "$RUNS"

TIMINGS=$RUNS/timings.jsonl
source "$(dirname "$0")/timed.sh"

for data in shapes events; do
  config=configs/${data}_${ARCH}.py
  snn=$RUNS/${data}_snn
  ann=$RUNS/${data}_ann
  echo "== $data: training $snn and $ann"
  timed "train ${data}_snn" "$snn" train.py --config "$config" --workdir "$snn" "${OVERRIDES[@]}"
  timed "train ${data}_ann" "$ann" train.py --config "$config" --workdir "$ann" --config.model.name="$ARCH" \
    "${OVERRIDES[@]}"

  echo "== $data: evaluation and analyses"
  timed "eval ${data}_snn" "$snn" evaluate.py --config "$config" --workdir "$snn" "${OVERRIDES[@]}"
  snn_analyses=energy,robustness,samples,latency
  if [[ $data == events ]]; then  # streaming runs over event recordings
    snn_analyses=$snn_analyses,streaming
  fi
  timed "analyses ${data}_snn" "$snn" evaluate.py --config "$config" --workdir "$snn" "${OVERRIDES[@]}" \
    --analyses="$snn_analyses" --compare_workdir="$ann"
  ann_analyses=activations,samples  # the ANN's robustness curve is in the SNN's robustness.json
  if [[ $data == shapes ]]; then  # conversion rate codes static images: not for event sequences
    ann_analyses=conversion,$ann_analyses
  fi
  timed "analyses ${data}_ann" "$ann" evaluate.py --config "$config" --workdir "$ann" \
    --config.model.name="$ARCH" "${OVERRIDES[@]}" --analyses="$ann_analyses" --compare_workdir="$snn"
done

"$PYTHON" -m reproduce.results embedded "$RUNS" ${RESULTS:+--out "$RESULTS"} | tee "$RUNS/results.md"

if [[ -n "${FIGURES:-}" ]]; then
  mkdir -p "$FIGURES"
  for figure in shapes_ann/conversion shapes_snn/robustness events_snn/robustness shapes_snn/energy \
                events_snn/energy shapes_ann/activations shapes_snn/samples events_snn/samples \
                shapes_snn/latency events_snn/latency events_snn/streaming; do
    cp "$RUNS/${figure%/*}/analysis/${figure#*/}.png" "$FIGURES/${figure/\//_}.png"
  done
  echo "figures copied to $FIGURES"
fi
