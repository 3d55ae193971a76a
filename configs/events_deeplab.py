"""Spiking-DeepLab on the embedded `events` dataset (DVS event frames), sized for a 2-core CPU.

    python train.py --config configs/events_deeplab.py --workdir runs/events
    python train.py --config configs/events_deeplab.py --workdir runs/events_ann --config.model.name=deeplab

32x32, sequences of T=4 event frames (2 channels), 2000 training / 500 validation sequences, width
0.125, batch 16, 20 epochs (2500 steps), Adam 3e-3 decayed x0.1 at half. Measured on the 2-core CPU
machine of the project (shared, so timings are noisy):
- Spiking-DeepLab: training loop 5 min 29 s (shared with a test run), validation MIoU 0.435
  (pixel accuracy 0.758).
- ANN DeepLab (`--config.model.name=deeplab`, backbone features averaged over the frames):
  training loop 4 min 02 s (shared), validation MIoU 0.595 (pixel accuracy 0.857); the spiking
  network reaches 0.73 of it.

The paper's analyses of the two runs (README "Results on the embedded data"; each under 5
minutes; each command goes on over its indented second line):

    python evaluate.py --config configs/events_deeplab.py --workdir runs/events --analyses=energy,robustness,samples
        --compare_workdir=runs/events_ann
    python evaluate.py --config configs/events_deeplab.py --workdir runs/events_ann --config.model.name=deeplab
        --analyses=activations,samples
"""

from configs import shapes_deeplab


def get_config():
    config = shapes_deeplab.get_config()
    config.dataset.name = "events"
    config.dataset.synthetic_sizes.train = 2000  # sequences of T event frames
    config.num_epochs = 20
    return config
