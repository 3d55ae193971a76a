"""Spiking-FCN on the embedded `shapes` dataset, sized for a 2-core CPU (settings of shapes_deeplab.py).

    python train.py --config configs/shapes_fcn.py --workdir runs/shapes_fcn
    python train.py --config configs/shapes_fcn.py --workdir runs/shapes_fcn_ann --config.model.name=fcn

Expected, from docs/results/embedded_fcn.json (scripts/regenerate_results.sh):
- spiking_fcn: validation MIoU 0.690 (pixel accuracy 0.911), 5,000 steps, 3 min 17 s
- fcn (--config.model.name=fcn): MIoU 0.868 (pixel accuracy 0.964), 1 min 06 s
(whole commands, 2 shared CPU cores, load average 1.6–2.0; the SNN reaches 0.79 of the ANN)

The FCN pair is further apart than the DeepLab pair of shapes_deeplab.py. A likely cause, not
tested: the FCN decoder's two spiking layers carry the class evidence of only num_classes channels
as spike counts over T=4, where the DeepLab's decoder is linear.
"""

from configs import shapes_deeplab


def get_config():
    config = shapes_deeplab.get_config()
    config.model.name = "spiking_fcn"
    return config
