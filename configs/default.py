"""Shared defaults: the paper's training settings (§5.1.2: Adam 3e-3, batch 16,
60 epochs, learning rate x 0.1 halfway, T = 20, 64x64) on PASCAL VOC2012 with Spiking-DeepLab.

Every other config starts from `get_config()` here and overrides a handful of fields. Not a run of
its own: use `voc_deeplab.py` and friends.
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # one seed for parameters, data order, Poisson spikes and augmentation

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "voc2012"  # voc2012, ddd17, shapes, events
    config.dataset.root = ""  # data directory (ignored by the synthetic datasets)
    config.dataset.image_size = 64  # side of the square network input
    config.dataset.train_split = "train_aug"  # split trained on
    config.dataset.eval_split = "val"  # split evaluated during and after training
    config.dataset.augment = False  # DDD17 augmentation of the authors' code (flip, scale, shift, rotate)
    config.dataset.cache_dir = ""  # HDF5 caches written by snnseg_jax.data.prepare; "": <root>/snnseg_cache
    config.dataset.synthetic_seed = 0  # shapes / events: seed of the generated scenes (fixed across training seeds)
    config.dataset.synthetic_sizes = ml_collections.ConfigDict(
        {"train": 4000, "val": 500}
    )  # shapes / events: examples per split

    config.model = ml_collections.ConfigDict()
    config.model.name = "spiking_deeplab"  # spiking_deeplab, spiking_fcn, deeplab, fcn
    config.model.width = 1.0  # multiplier on every hidden channel count
    config.model.timesteps = 20  # T: simulation steps (event frames per sequence on event data)
    config.model.head = "paper"  # DeepLab classifier: "paper" (3 layers) or "released" (2 layers)
    config.model.leak = 0.99  # membrane leak lambda
    config.model.threshold = 1.0  # firing threshold theta
    config.model.surrogate = "linear"  # linear, fast_sigmoid, exp, pass_through
    config.model.surrogate_scale = config_dict.placeholder(float)  # None: the surrogate's default (0.3 for linear)
    config.model.membrane_floor = config_dict.placeholder(float)  # <= 0 thresholds; None: unbounded (the paper's)
    config.model.dtype = "float32"  # compute dtype: float32 or bfloat16
    config.model.remat = (
        False  # recompute each layer's convolution in the backward pass: less memory, ~1/3 more conv time
    )
    config.model.fused = (
        True  # spiking layers as one conv-BNTT-LIF op with a hand-written backward (False: plain autodiff)
    )
    config.model.tuned_ops = (
        True  # faster formulations of the ops for the backend (False: XLA's plain ops; same values)
    )

    # A spike budget in the loss of a spiking network: loss = cross-entropy + penalty * cost (snnseg_jax.sparsity)
    config.spikes = ml_collections.ConfigDict()
    config.spikes.penalty = 0.0  # lambda >= 0 on the cost; 0: no spike term, the plain cross-entropy
    config.spikes.weighting = "energy"  # energy: cost E_SNN / E_ANN of the batch (Eqs. 8-12); rate: see target_rate
    config.spikes.target_rate = 0.1  # rate: spikes per neuron per step above which a layer costs (its excess squared)
    config.spikes.warmup_steps = 0  # steps over which lambda rises linearly from 0 (0: full lambda from the start)

    # Training on streams (event datasets, spiking networks; see docs/training.md, "Training on streams"):
    # each slot of the batch follows one recording window after window, carrying its membranes on.
    config.stream_training = ml_collections.ConfigDict()
    config.stream_training.enabled = False
    config.stream_training.zero_state_fraction = 0.25  # slots of each batch that always start from zero state
    # every_frame: each frame's streamed prediction (the mean of the last T readouts) against its label;
    # window_end: each window's mean readout against its last frame's label, as window training scores
    config.stream_training.loss = "every_frame"

    # Several processes (hosts): see docs/training.md, "Multiple devices and hosts". Empty / 0 / -1 fields are
    # detected by JAX under SLURM, Open MPI and on Cloud TPU pods.
    config.distributed = ml_collections.ConfigDict()
    config.distributed.initialize = False  # call jax.distributed.initialize() to join the other processes
    config.distributed.coordinator_address = ""  # "host:port" of process 0 (or env JAX_COORDINATOR_ADDRESS)
    config.distributed.num_processes = 0  # how many processes take part
    config.distributed.process_id = -1  # this process's number, 0 .. num_processes - 1

    config.batch_size = 16  # global batch, split over all devices of all processes
    config.num_epochs = 60
    config.num_train_steps = -1  # if > 0, stop after this many steps instead of num_epochs
    config.learning_rate = 3e-3  # Adam
    config.weight_decay = 5e-4  # L2 coefficient added to the gradient before Adam (the released code's)
    config.weight_decay_scope = "kernels"  # kernels: conv kernels only; all: BNTT/BN scales and biases too
    config.lr_decay_at = 0.5  # fraction of training after which the learning rate is multiplied ...
    config.lr_decay_factor = 0.1  # ... by this factor

    config.log_every_steps = 50
    config.eval_every_steps = 1000  # periodic validation; <= 0 validates only at the end
    config.checkpoint_every_steps = 1000  # steps between checkpoints (one is also saved at the end)
    config.keep_checkpoints = 3  # newest checkpoints kept on disk
    config.eval_batch_size = 16

    config.loader_threads = 1  # threads reading and augmenting batches (the batches do not depend on it)
    config.prefetch_batches = 2  # batches prepared ahead of the step that is running
    config.skip_nonfinite_steps = False  # non-finite loss, gradient or update: stop (False) or skip the step
    # evaluate.py --analyses=... (snnseg_jax.analysis)
    config.analysis = ml_collections.ConfigDict()
    # robustness: noise sigma as a fraction of the input range (x 255 on 0-255 images); 0 is added
    config.analysis.noise_sigmas = (0.025, 0.05, 0.1, 0.2, 0.4)
    # conversion: the T read out, all from one simulation of max(T) steps
    config.analysis.conversion_timesteps = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
    config.analysis.conversion_images = 50  # conversion: first images of the eval split evaluated
    config.analysis.balance_batch_size = 16  # conversion: images of the first training batch setting thresholds
    config.analysis.balance_timesteps = 128  # conversion: Poisson steps over which layer maxima are taken
    config.analysis.conversion_threshold_scale = 0.7  # conversion: factor on every balanced threshold (released code's)
    config.analysis.activation_images = 200  # activations: first eval images the maxima are taken over
    config.analysis.num_samples = 6  # samples: image / prediction / ground-truth triplets drawn
    config.analysis.stream_late_statistics = "last"  # streaming: BNTT statistics past step T (snnseg_jax.stream)
    return config
