"""Spiking-DeepLab on the embedded `events` dataset (DVS event frames), sized for a 2-core CPU.

    python train.py --config configs/events_deeplab.py --workdir runs/events
    python train.py --config configs/events_deeplab.py --workdir runs/events_ann --config.model.name=deeplab

32x32, sequences of T=4 event frames (2 channels), 2000 training / 500 validation sequences, width
0.125, batch 16, 20 epochs (2500 steps), Adam 3e-3 decayed x0.1 at half. The ANN DeepLab averages
its backbone features over the frames.

Expected, from docs/results/embedded_deeplab.json (scripts/regenerate_results.sh):
- spiking_deeplab: validation MIoU 0.460 (pixel accuracy 0.797), 2,500 steps, 3 min 12 s
- deeplab (--config.model.name=deeplab): MIoU 0.597 (pixel accuracy 0.857), 2 min 46 s
(whole commands, 2 shared CPU cores, load average 6.5–8.1; the SNN reaches 0.77 of the ANN)

The paper's analyses of the two runs (README "Results on the embedded data"; conversion does not
apply to event data):

    python evaluate.py --config configs/events_deeplab.py --workdir runs/events \
        --analyses=energy,robustness,samples --compare_workdir=runs/events_ann
    python evaluate.py --config configs/events_deeplab.py --workdir runs/events_ann --config.model.name=deeplab \
        --analyses=activations,samples --compare_workdir=runs/events
"""

from configs import shapes_deeplab


def get_config():
    config = shapes_deeplab.get_config()
    config.dataset.name = "events"
    config.dataset.synthetic_sizes.train = 2000  # sequences of T event frames
    config.num_epochs = 20
    return config
