#!/usr/bin/env bash
# Regenerates every measured number README.md and docs/ show from the current code and configs, then
# rewrites them in place (the embedded configs' hand-written "Expected" lines are checked by
# tests/test_readme_results.py and corrected by hand):
#
#   reproduce/regenerate_results.sh [PART ...]     PART: embedded, fcn, photo, performance, streams (default: these)
#
#   embedded     reproduce/embedded_results.sh: the DeepLab pair on shapes and on events, trained, then
#                analysed -> docs/results/embedded_deeplab.json and the figures in docs/embedded_results/
#   fcn          the same for the FCNs -> docs/results/embedded_fcn.json (analysis times only, in docs/results.md)
#   photo        reproduce/photo_check.sh -> docs/results/photo_check.json
#   performance  reproduce/performance_results.sh -> docs/results/performance.json
#   paper        reproduce/paper_settings.sh: the four networks at the paper's settings (T = 20) on the
#                photographs -> docs/results/paper_settings.json (about an hour; not in the default set)
#   sparsity-demo  reproduce/sparsity_frontier.sh on the shapes demo (600 steps): each spiking network per spike-budget
#                λ and its ANN twin -> docs/results/sparsity_demo.json, docs/figures/sparsity_demo.png
#                (not in the default set)
#   sparsity     the same at the paper's settings -> docs/results/sparsity_paper.json,
#                docs/figures/sparsity_paper.png (hours; not in the default set)
#   streams      reproduce/stream_training.sh: both spiking networks of the events demo trained in windows and
#                on streams, each streamed and in windows -> docs/results/stream_training.json
#
#   RUNS   where the runs go (default runs/results). Runs found there are resumed, not retrained: after a
#          change to the code, data or configs, start from an empty RUNS (or delete the parts' runs).
#
# Then `python -m reproduce.results readme` renders README.md and docs/ from docs/results/*.json, and
# tests/test_readme_results.py checks that they agree. The times it records are those of this
# machine under its load at that moment (docs/results.md shows how long the last regeneration took).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-runs/results}
parts=("$@")
if [[ ${#parts[@]} == 0 ]]; then parts=(embedded fcn photo performance streams); fi
for part in "${parts[@]}"; do
  echo "==== $part"
  case $part in
    embedded) RESULTS=docs/results/embedded_deeplab.json FIGURES=docs/embedded_results \
                reproduce/embedded_results.sh "$RUNS/embedded" ;;
    fcn) ARCH=fcn RESULTS=docs/results/embedded_fcn.json reproduce/embedded_results.sh "$RUNS/embedded_fcn" ;;
    photo) rm -rf "$RUNS/photo_ann"; RESULTS=docs/results/photo_check.json reproduce/photo_check.sh "$RUNS/photo_ann" ;;
    performance) RESULTS=docs/results/performance.json reproduce/performance_results.sh "$RUNS/performance" ;;
    paper) RESULTS=docs/results/paper_settings.json reproduce/paper_settings.sh "$RUNS/paper_settings" ;;
    sparsity-demo) SETTINGS=demo STEPS=600 RESULTS=docs/results/sparsity_demo.json FIGURE=docs/figures/sparsity_demo.png \
                     reproduce/sparsity_frontier.sh "$RUNS/sparsity_demo" ;;
    sparsity) # the committed points: energy lambdas for DeepLab, lambda 0 for the FCN, the rate budget for both,
      # and for DeepLab both budgets with a warm-up
      SETTINGS=paper NETWORKS=deeplab LAMBDAS="0 3e-3 3e-2 0.1" reproduce/sparsity_frontier.sh "$RUNS/sparsity_paper"
      SETTINGS=paper NETWORKS=fcn LAMBDAS=0 reproduce/sparsity_frontier.sh "$RUNS/sparsity_paper"
      SETTINGS=paper NETWORKS=deeplab WEIGHTING=rate TARGET_RATE=0.05 WARMUP=150 LAMBDAS="5 10 20" \
        reproduce/sparsity_frontier.sh "$RUNS/sparsity_paper"
      SETTINGS=paper NETWORKS=deeplab WEIGHTING=rate TARGET_RATE=0.05 WARMUP=300 LAMBDAS=10 \
        reproduce/sparsity_frontier.sh "$RUNS/sparsity_paper"
      SETTINGS=paper NETWORKS=deeplab WARMUP=150 LAMBDAS=0.1 reproduce/sparsity_frontier.sh "$RUNS/sparsity_paper"
      SETTINGS=paper WEIGHTING=rate TARGET_RATE=0.05 LAMBDAS=10 RESULTS=docs/results/sparsity_paper.json \
        FIGURE=docs/figures/sparsity_paper.png reproduce/sparsity_frontier.sh "$RUNS/sparsity_paper" ;;
    streams) RESULTS=docs/results/stream_training.json reproduce/stream_training.sh "$RUNS/stream_training" ;;
    *) echo "unknown part $part; choose from embedded, fcn, photo, performance, paper, sparsity-demo, sparsity, streams" >&2
       exit 2 ;;
  esac
done
${PYTHON:-python} -m reproduce.results readme
