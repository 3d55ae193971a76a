"""Spiking-FCN on the embedded `events` dataset, sized for a 2-core CPU (settings of events_deeplab.py).

    python train.py --config configs/events_fcn.py --workdir runs/events_fcn
    python train.py --config configs/events_fcn.py --workdir runs/events_fcn_ann --config.model.name=fcn

Expected, from docs/results/embedded_fcn.json (scripts/regenerate_results.sh):
- spiking_fcn: validation MIoU 0.410 (pixel accuracy 0.810), 5,000 steps, 3 min 24 s
- fcn (--config.model.name=fcn): MIoU 0.632 (pixel accuracy 0.872), 2 min 29 s
(whole commands, 2 shared CPU cores, load average 1.7–2.1; the SNN reaches 0.65 of the ANN)

The ANN FCN averages its features over the frames before the classifier.
"""

from configs import events_deeplab


def get_config():
    config = events_deeplab.get_config()
    config.model.name = "spiking_fcn"
    return config
