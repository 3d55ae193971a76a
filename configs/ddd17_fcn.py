"""Spiking-FCN on DDD17 with Ev-SegNet labels (train / test) at the paper's settings (paper §5.1.2).

    python train.py --config configs/ddd17_fcn.py --workdir runs/ddd17_fcn --config.dataset.root=/path/to/data
    python train.py --config configs/ddd17_fcn.py --workdir runs/ddd17_fcn_ann \\
        --config.model.name=fcn --config.dataset.root=...

Adam 3e-3, batch 16, 60 epochs, learning rate x0.1 at 50%, T=20, leak 0.99, threshold 1.0, 64x64.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "ddd17"
    config.dataset.root = "data/DDD17"
    config.dataset.train_split = "train"
    config.dataset.eval_split = "test"
    config.model.name = "spiking_fcn"
    return config
