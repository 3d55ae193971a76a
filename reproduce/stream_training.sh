#!/usr/bin/env bash
# docs/results.md, "Trained to stream": each spiking network of the events demo trained in windows from
# zero state (configs/events_<arch>.py, as the paper trains), on streams (the same config with
# stream_training enabled: configs/events_deeplab_stream.py for Spiking-DeepLab) and on streams with a
# floor on the membranes (model.membrane_floor = FLOOR), the same data and steps; each evaluated with
# --analyses=streaming (windowed and continuous MIoU, MIoU by frame of the recording, frames per
# second at batch 1). Prints a table and, with RESULTS, writes it.
#
#   reproduce/stream_training.sh [RUNS_DIR]     (default runs/stream_training)
#
#   ARCHS    the architectures (default "deeplab fcn")
#   FLOOR    the membrane floor of the third run, in thresholds (default -1)
#   RESULTS  if set, a JSON file (docs/results/stream_training.json for the docs) that receives the
#            table, each run's config and overrides, the MIoU by frame, the times and the machine.
# Finished runs in RUNS_DIR are not retrained (train.py resumes); after a change to the code, give it an
# empty directory. Run from the repository root. About 3 + 2 x 9 minutes of training per network on 2 CPU cores.
set -euo pipefail

RUNS=${1:-runs/stream_training}
PYTHON=${PYTHON:-python}
mkdir -p "$RUNS"
TIMINGS=$RUNS/timings.jsonl
source "$(dirname "$0")/timed.sh"

for arch in ${ARCHS:-deeplab fcn}; do
  windows=(--config "configs/events_$arch.py")
  if [[ $arch == deeplab ]]; then
    streams=(--config configs/events_deeplab_stream.py)
  else
    streams=(--config "configs/events_$arch.py" --config.stream_training.enabled=True
      --config.analysis.stream_late_statistics=cycle)
  fi
  floor=("${streams[@]}" --config.model.membrane_floor="${FLOOR:--1}")
  for mode in windows streams floor; do
    declare -n args=$mode
    workdir=$RUNS/${arch}_$mode
    echo "== $arch trained in $mode: $workdir"
    timed "train ${arch}_$mode" "$workdir" train.py "${args[@]}" --workdir "$workdir"
    timed "eval ${arch}_$mode" "$workdir" evaluate.py "${args[@]}" --workdir "$workdir" --analyses=streaming
  done
done

"$PYTHON" -m reproduce.results streams "$RUNS" ${RESULTS:+--out "$RESULTS"} | tee "$RUNS/results.md"
