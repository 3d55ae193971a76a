"""Spiking-FCN on the embedded `events` dataset, sized for a 2-core CPU (settings of events_deeplab.py).

    python train.py --config configs/events_fcn.py --workdir runs/events_fcn
    python train.py --config configs/events_fcn.py --workdir runs/events_fcn_ann --config.model.name=fcn

Measured on the 2-core CPU machine of the project, otherwise quiet, the whole command (2500 steps)
including data generation and compilation (before time was folded batch-major, which changes only
float rounding):
- Spiking-FCN: validation MIoU 0.369 (pixel accuracy 0.788), 3 min 20 s.
- ANN FCN (`--config.model.name=fcn`, features averaged over the frames before the classifier):
  validation MIoU 0.565 (pixel accuracy 0.838), 2 min 28 s. The spiking network reaches 0.65 of it
  (events_deeplab.py: 0.435 vs 0.595, 0.73).
"""

from configs import events_deeplab


def get_config():
    config = events_deeplab.get_config()
    config.model.name = "spiking_fcn"
    return config
