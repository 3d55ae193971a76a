#!/usr/bin/env bash
# docs/results.md, "Trading accuracy for energy": each spiking network trained with the spike budget of
# the loss at several lambda (`spikes.penalty`), its ANN twin once, and the `energy` analysis of every
# spiking run against the twin: MIoU against E_ANN / E_SNN (and each spiking run's robustness to noise).
# Prints a table and, with RESULTS, writes it.
#
#   reproduce/sparsity_frontier.sh [RUNS_DIR]     (default runs/sparsity_$SETTINGS)
#
#   SETTINGS  paper (default): configs/voc_*.py on the photograph data, as reproduce/paper_settings.sh;
#             demo: configs/shapes_*.py on the embedded shapes data (no DATA needed)
#   LAMBDAS   the spike-budget weights, each one run per network (default "0 1e-3 3e-3 1e-2")
#   WEIGHTING what the budget weighs (`spikes.weighting`): energy (default) or rate
#   TARGET_RATE  rate only: spikes per neuron per step above which a layer costs (`spikes.target_rate`,
#             default the config's); rate runs are named ..._rate<TARGET_RATE>_lambda<LAMBDA>
#   WARMUP    if set, steps over which lambda rises linearly from 0 (`spikes.warmup_steps`); such runs
#             are named ..._warmup<WARMUP>_lambda<LAMBDA>
#   NETWORKS  the architectures (default "deeplab fcn"); two calls with one each may share RUNS_DIR
#   WIDTH     multiplier on every hidden channel count (paper default 0.25; demo default the config's)
#   STEPS     training steps of every run (paper default 600; demo default the config's)
#   DATA      paper only: where the photograph dataset goes (default /tmp/photo_voc; made if missing)
#   RESULTS   if set, a JSON file (docs/results/sparsity_$SETTINGS.json for the docs) that receives the
#             table, the overrides of every run, the spikes per layer, the times and the machine.
#   FIGURE    if set, a PNG file (docs/figures/sparsity_$SETTINGS.png for the docs) that receives the
#             figure: MIoU as a fraction of the ANN twin's against E_ANN / E_SNN, the paper's points marked.
#   EXTEND    if set, an earlier result file (usually RESULTS itself) whose runs RUNS_DIR lacks are kept
#             in the new one, each stamped with the commit and date it was collected at: adding a point
#             then costs its own run and the ANN twin's, not the whole frontier again.
# Finished runs in RUNS_DIR are not retrained (train.py resumes); after a change to the code or the
# settings, give it an empty directory. Run from the repository root. Each run costs what one run of
# reproduce/paper_settings.sh (paper) or of the demo (demo) costs: (lambdas + 1) runs per network.
set -euo pipefail

SETTINGS=${SETTINGS:-paper}
RUNS=${1:-runs/sparsity_$SETTINGS}
LAMBDAS=${LAMBDAS:-0 1e-3 3e-3 1e-2}
WEIGHTING=${WEIGHTING:-energy}
PYTHON=${PYTHON:-python}
mkdir -p "$RUNS"
TIMINGS=$RUNS/timings.jsonl
MANIFEST=$RUNS/runs.jsonl
source "$(dirname "$0")/timed.sh"

case $SETTINGS in
  paper)
    DATA=${DATA:-/tmp/photo_voc}
    if ! voc_found "$DATA"; then
      timed make "$RUNS" -m reproduce.make_photo_voc --out "$DATA"
    fi
    COMMON=(--config.dataset.root="$DATA" --config.model.width="${WIDTH:-0.25}" --config.num_train_steps="${STEPS:-600}")
    ;;
  demo)
    COMMON=(${WIDTH:+--config.model.width="$WIDTH"} ${STEPS:+--config.num_train_steps="$STEPS"})
    ;;
  *)
    echo "SETTINGS must be paper or demo, not '$SETTINGS'" >&2
    exit 2
    ;;
esac
case $WEIGHTING in
  energy) BUDGET=() TAG= ;;
  rate)
    BUDGET=(--config.spikes.weighting=rate ${TARGET_RATE:+--config.spikes.target_rate="$TARGET_RATE"})
    TAG=_rate${TARGET_RATE:-default}
    ;;
  *)
    echo "WEIGHTING must be energy or rate, not '$WEIGHTING'" >&2
    exit 2
    ;;
esac
if [[ -n ${WARMUP:-} ]]; then
  BUDGET+=(--config.spikes.warmup_steps="$WARMUP")
  TAG+=_warmup$WARMUP
fi

# `record NAME CONFIG OVERRIDES...`: the run's line in the manifest that reproduce.results reads (once per run;
# the runs of earlier calls stay listed, and are named as missing if they did not finish).
record() {
  if ! grep -qF "{\"run\": \"$1\"," "$MANIFEST" 2> /dev/null; then
    "$PYTHON" -c 'import json, sys; print(json.dumps({"run": sys.argv[1], "config": sys.argv[2], "overrides": sys.argv[3:]}))' \
      "$@" >> "$MANIFEST"
  fi
}

for arch in ${NETWORKS:-deeplab fcn}; do
  if [[ $SETTINGS == paper ]]; then config=configs/voc_$arch.py; else config=configs/shapes_$arch.py; fi
  ann=$RUNS/${arch}_ann
  ann_args=(--config.model.name="$arch" "${COMMON[@]}")
  echo "== $arch: the ANN twin $ann"
  record "${arch}_ann" "$config" "${ann_args[@]}"
  timed "train ${arch}_ann" "$ann" train.py --config "$config" --workdir "$ann" "${ann_args[@]}"
  timed "eval ${arch}_ann" "$ann" evaluate.py --config "$config" --workdir "$ann" "${ann_args[@]}"
  for lambda in $LAMBDAS; do
    name=${arch}_snn${TAG}_lambda$lambda
    snn=$RUNS/$name
    snn_args=(--config.spikes.penalty="$lambda" "${BUDGET[@]}" "${COMMON[@]}")
    echo "== $arch: lambda $lambda, $snn"
    record "$name" "$config" "${snn_args[@]}"
    timed "train $name" "$snn" train.py --config "$config" --workdir "$snn" "${snn_args[@]}"
    timed "eval $name" "$snn" evaluate.py --config "$config" --workdir "$snn" "${snn_args[@]}" \
      --analyses=energy,robustness --compare_workdir="$ann"
  done
done

"$PYTHON" -m reproduce.results sparsity "$RUNS" ${RESULTS:+--out "$RESULTS"} ${FIGURE:+--figure "$FIGURE"} ${EXTEND:+--extend "$EXTEND"} \
  | tee "$RUNS/results.md"
