#!/usr/bin/env bash
# docs/datasets.md, "A check on real photographs", as written there: makes the photograph dataset, trains a
# DeepLab ANN of width 0.25 on it for 400 steps and evaluates it, timing each command.
#
#   reproduce/photo_check.sh [WORKDIR]    (default runs/photo_ann; must not hold a run yet)
#
#   DATA      where the dataset goes (default /tmp/photo_voc)
#   RESULTS   if set, a JSON file (docs/results/photo_check.json for the docs) that receives the
#             MIoU, the MIoU of predicting background everywhere, the times and the machine.
# Needs `pip install -e ".[photos]"`. Run from the repository root.
set -euo pipefail

WORKDIR=${1:-runs/photo_ann}
DATA=${DATA:-/tmp/photo_voc}
if [[ -e $WORKDIR/checkpoints ]]; then
  echo "$WORKDIR already holds a run; remove it or give another workdir" >&2
  exit 2
fi
mkdir -p "$WORKDIR"
TIMINGS=$WORKDIR/timings.jsonl
source "$(dirname "$0")/timed.sh"

timed make "$WORKDIR" -m reproduce.make_photo_voc --out "$DATA"
timed train "$WORKDIR" train.py --config configs/voc_deeplab.py --workdir "$WORKDIR" --config.dataset.root="$DATA" \
  --config.model.name=deeplab --config.model.width=0.25 --config.num_train_steps=400
timed evaluate "$WORKDIR" evaluate.py --config configs/voc_deeplab.py --workdir "$WORKDIR" \
  --config.dataset.root="$DATA" --config.model.name=deeplab --config.model.width=0.25
"${PYTHON:-python}" -m reproduce.results photo "$WORKDIR" --timings "$TIMINGS" ${RESULTS:+--out "$RESULTS"}
