#!/usr/bin/env bash
# docs/results.md, "Trained to stream": each spiking network of the events demo trained in windows from
# zero state (configs/events_<arch>.py, as the paper trains), on streams scored every frame (its stream
# config, configs/events_<arch>_stream.py) and on streams scored at the end of each window only (the
# same config with stream_training.loss = window_end), the same data and steps; each evaluated with
# --analyses=streaming (windowed and continuous MIoU, MIoU by frame of the recording, frames per
# second at batch 1). Prints a table and, with RESULTS, writes it.
#
#   reproduce/stream_training.sh [RUNS_DIR]     (default runs/stream_training)
#
#   ARCHS    the architectures (default "deeplab fcn")
#   RESULTS  if set, a JSON file (docs/results/stream_training.json for the docs) that receives the
#            table, each run's config and overrides, the MIoU by frame, the times and the machine.
# Finished runs in RUNS_DIR are not retrained (train.py resumes); after a change to the code, give it an
# empty directory. Run from the repository root. About 3 x 8 (DeepLab) or 3 x 12 (FCN) minutes of
# training on 2 CPU cores.
set -euo pipefail

RUNS=${1:-runs/stream_training}
PYTHON=${PYTHON:-python}
mkdir -p "$RUNS"
TIMINGS=$RUNS/timings.jsonl
source "$(dirname "$0")/timed.sh"

for arch in ${ARCHS:-deeplab fcn}; do
  windows=(--config "configs/events_$arch.py")
  streams=(--config "configs/events_${arch}_stream.py")
  window_end=("${streams[@]}" --config.stream_training.loss=window_end)
  for mode in windows window_end streams; do
    declare -n args=$mode
    workdir=$RUNS/${arch}_$mode
    echo "== $arch trained in $mode: $workdir"
    timed "train ${arch}_$mode" "$workdir" train.py "${args[@]}" --workdir "$workdir"
    timed "eval ${arch}_$mode" "$workdir" evaluate.py "${args[@]}" --workdir "$workdir" --analyses=streaming
  done
done

"$PYTHON" -m reproduce.results streams "$RUNS" ${RESULTS:+--out "$RESULTS"} | tee "$RUNS/results.md"
