"""Spiking-DeepLab on the embedded `shapes` dataset: the default demo, sized for a 2-core CPU.

    python train.py --config configs/shapes_deeplab.py --workdir runs/demo
    python train.py --config configs/shapes_deeplab.py --workdir runs/demo_ann --config.model.name=deeplab
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "shapes"
    config.dataset.image_size = 32
    config.dataset.train_split = "train"
    config.dataset.eval_split = "val"
    config.model.name = "spiking_deeplab"
    config.model.width = 0.125
    config.model.timesteps = 4
    config.num_epochs = 10
    config.log_every_steps = 25
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.eval_batch_size = 50
    return config
