# Sourced by the scripts that measure the numbers of README.md and docs/. `timed NAME WORKDIR ARGS...` runs
# `$PYTHON ARGS...` and appends one JSON line to $TIMINGS: NAME, the wall-clock seconds, whether it
# was a train.py run that resumed from a checkpoint in WORKDIR (its time is then not a whole run's),
# and the 1-minute load average before and after (how busy the machine was).
timed() {
  local name=$1 workdir=$2 resumed=false load_before start
  shift 2
  if [[ -d $workdir/checkpoints && $1 == train.py ]]; then resumed=true; fi
  load_before=$(cut -d' ' -f1 /proc/loadavg)
  start=$EPOCHREALTIME
  "${PYTHON:-python}" "$@"
  printf '{"name": "%s", "seconds": %s, "resumed": %s, "load_before": %s, "load_after": %s}\n' \
    "$name" "$(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $start}")" "$resumed" "$load_before" \
    "$(cut -d' ' -f1 /proc/loadavg)" >> "$TIMINGS"
}

# `voc_found DIR`: whether DIR holds a VOC2012 folder, itself or as VOCdevkit/VOC2012 (as
# reproduce/make_photo_voc.py writes it).
voc_found() {
  [[ -f $1/ImageSets/Segmentation/val.txt || -f $1/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt ]]
}
