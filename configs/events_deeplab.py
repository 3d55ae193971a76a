"""Spiking-DeepLab on the embedded `events` dataset (DVS event frames), sized for a 2-core CPU.

    python train.py --config configs/events_deeplab.py --workdir runs/events
    python train.py --config configs/events_deeplab.py --workdir runs/events_ann --config.model.name=deeplab
"""

from configs import shapes_deeplab


def get_config():
    config = shapes_deeplab.get_config()
    config.dataset.name = "events"
    config.dataset.synthetic_sizes.train = 2000  # sequences of T event frames
    config.num_epochs = 20
    return config
