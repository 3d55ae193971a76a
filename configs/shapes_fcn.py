"""Spiking-FCN on the embedded `shapes` dataset, sized for a 2-core CPU (settings of shapes_deeplab.py).

    python train.py --config configs/shapes_fcn.py --workdir runs/shapes_fcn
    python train.py --config configs/shapes_fcn.py --workdir runs/shapes_fcn_ann --config.model.name=fcn

Expected: validation MIoU 0.689 after 5,000 steps (the ANN twin: 0.867), ~10 min on 2 CPU cores.

The FCN pair is further apart than the DeepLab pair of shapes_deeplab.py. A likely cause, not
tested: the FCN decoder's two spiking layers carry the class evidence of only num_classes channels
as spike counts over T=4, where the DeepLab's decoder is linear.

A spike budget in the loss (`--config.spikes.penalty=1e-3`, λ) makes the network fire less for
some of its MIoU; docs/results.md, "Trading accuracy for energy", shows what each λ gave on this
demo.
"""

from configs import shapes_deeplab


def get_config():
    config = shapes_deeplab.get_config()
    config.model.name = "spiking_fcn"
    return config
