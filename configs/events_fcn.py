"""Spiking-FCN on the embedded `events` dataset, sized for a 2-core CPU (settings of events_deeplab.py).

    python train.py --config configs/events_fcn.py --workdir runs/events_fcn
    python train.py --config configs/events_fcn.py --workdir runs/events_fcn_ann --config.model.name=fcn

Expected: validation MIoU 0.410 after 5,000 steps (the ANN twin: 0.634), ~11 min on 2 CPU cores.

The ANN FCN averages its features over the frames before the classifier.
"""

from configs import events_deeplab


def get_config():
    config = events_deeplab.get_config()
    config.model.name = "spiking_fcn"
    return config
