"""Spiking-DeepLab on the embedded `events` dataset (DVS event recordings), sized for a 2-core CPU.

    python train.py --config configs/events_deeplab.py --workdir runs/events
    python train.py --config configs/events_deeplab.py --workdir runs/events_ann --config.model.name=deeplab

32x32 event frames (2 channels) in recordings of 20 frames, like DDD17: 800 training recordings
(16,000 frames) and 50 validation recordings (1,000 frames); an example is the sequence of T=4
frames ending at a frame, labelled with that frame's segmentation. Width 0.125, batch 16, 5 epochs
(5000 steps), Adam 3e-3 decayed x0.1 at half. The ANN DeepLab averages its backbone features over
the frames.

Expected, from docs/results/embedded_deeplab.json (scripts/regenerate_results.sh):
- spiking_deeplab: validation MIoU 0.526 (pixel accuracy 0.817), 5,000 steps, 2 min 51 s
- deeplab (--config.model.name=deeplab): MIoU 0.635 (pixel accuracy 0.871), 1 min 56 s
(whole commands, 2 shared CPU cores, load average 1.8–2.1; the SNN reaches 0.83 of the ANN)

The paper's analyses of the two runs, and the streaming ones (README "Results on the embedded
data", "Streaming and latency"; conversion does not apply to event data):

    python evaluate.py --config configs/events_deeplab.py --workdir runs/events \
        --analyses=energy,robustness,samples,latency,streaming --compare_workdir=runs/events_ann
    python evaluate.py --config configs/events_deeplab.py --workdir runs/events_ann --config.model.name=deeplab \
        --analyses=activations,samples --compare_workdir=runs/events
"""

from configs import shapes_deeplab


def get_config():
    config = shapes_deeplab.get_config()
    config.dataset.name = "events"
    config.dataset.synthetic_sizes.train = 16000  # event frames (each ends one example), 20 per recording
    config.dataset.synthetic_sizes.val = 1000
    config.num_epochs = 5
    return config
