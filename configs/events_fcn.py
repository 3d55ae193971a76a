"""Spiking-FCN on the embedded `events` dataset, sized for a 2-core CPU (settings of events_deeplab.py).

    python train.py --config configs/events_fcn.py --workdir runs/events_fcn
    python train.py --config configs/events_fcn.py --workdir runs/events_fcn_ann --config.model.name=fcn

Measured on the project's 2-core CPU while other jobs shared it (whole command, 5000 steps, data
generation and compilation included):
- Spiking-FCN: validation MIoU 0.410 (pixel accuracy 0.810), 6 min 34 s.
- ANN FCN (`--config.model.name=fcn`, features averaged over the frames before the classifier):
  validation MIoU 0.625 (pixel accuracy 0.870), 4 min 38 s. The spiking network reaches 0.66 of it
  (events_deeplab.py: 0.526 vs 0.640, 0.82).
"""

from configs import events_deeplab


def get_config():
    config = events_deeplab.get_config()
    config.model.name = "spiking_fcn"
    return config
