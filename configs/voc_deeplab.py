"""Spiking-DeepLab on PASCAL VOC2012 (train_aug / val) at the paper's settings (paper §5.1.2).

    python train.py --config configs/voc_deeplab.py --workdir runs/voc_deeplab --config.dataset.root=/path/to/data
    python train.py --config configs/voc_deeplab.py --workdir runs/voc_deeplab_ann \\
        --config.model.name=deeplab --config.dataset.root=...

Adam 3e-3, batch 16, 60 epochs, learning rate x0.1 at 50%, T=20, leak 0.99, threshold 1.0, 64x64.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.root = "data/VOCdevkit/VOC2012"
    config.model.name = "spiking_deeplab"
    return config
