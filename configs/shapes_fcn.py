"""Spiking-FCN on the embedded `shapes` dataset, sized for a 2-core CPU (settings of shapes_deeplab.py).

    python train.py --config configs/shapes_fcn.py --workdir runs/shapes_fcn
    python train.py --config configs/shapes_fcn.py --workdir runs/shapes_fcn_ann --config.model.name=fcn

Runtime and MIoU not measured yet (the session ran out of time).
"""

from configs import shapes_deeplab


def get_config():
    config = shapes_deeplab.get_config()
    config.model.name = "spiking_fcn"
    return config
