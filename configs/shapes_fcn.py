"""Spiking-FCN on the embedded `shapes` dataset, sized for a 2-core CPU (settings of shapes_deeplab.py).

    python train.py --config configs/shapes_fcn.py --workdir runs/shapes_fcn
    python train.py --config configs/shapes_fcn.py --workdir runs/shapes_fcn_ann --config.model.name=fcn

Measured on the 2-core CPU machine of the project, the whole command (5000 steps) including data
generation and compilation (before time was folded batch-major, which changes only float rounding):
- Spiking-FCN: validation MIoU 0.685 (pixel accuracy 0.910); 0.501 / 0.572 / 0.653 / 0.680 / 0.686
  at steps 500 / 1000 / 2000 / 3000 / 4500. 8 min 24 s, about 3 minutes of it shared with a test
  run (its steps ran at 15 per second alone, so about 6 minutes alone).
- ANN FCN (`--config.model.name=fcn`): validation MIoU 0.861 (pixel accuracy 0.963), 2 min 15 s.
  The spiking network reaches 0.80 of it (the DeepLab pair of shapes_deeplab.py: 0.91). A likely
  cause, not tested: the FCN decoder's two spiking layers carry the class evidence of only
  num_classes channels as spike counts over T=4, where the DeepLab's decoder is linear.
"""

from configs import shapes_deeplab


def get_config():
    config = shapes_deeplab.get_config()
    config.model.name = "spiking_fcn"
    return config
