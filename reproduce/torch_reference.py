"""Spiking-DeepLab and its train step in PyTorch: the reference our speed is compared with.

    pip install -e ".[bench]"
    python -m reproduce.torch_reference --batch 2 --timesteps 20 --size 64 --width 1.0 --steps 3

The network of `configs/voc_deeplab.py` written out in PyTorch, independently of the JAX code:
the layer table of `snnseg_jax.architecture.deeplab()` (paper head), every unit a 3x3 (fc7: 1x1)
convolution without bias -> BNTT (per-step batch statistics and scales gamma_t, no shift, epsilon
1e-4, momentum 0.1) -> LIF neurons (leak 0.99, threshold 1, soft reset detached from the gradient,
the linear surrogate 0.3 * max(0, 1 - |x|) on x = u / threshold - 1), average pools 3x3, stride 2,
padding 1 (divisor 9) after conv1_2 and conv2_2; the output 1x1 convolution reads fc7's spikes
averaged over the T steps, and the logits are upsampled bilinearly (corners aligned) to the input.
Images are rate coded with signed Poisson spikes drawn afresh at each step. The train step is ours:
cross-entropy, backpropagation through time, Adam at 3e-3 with L2 weight decay 5e-4 on the kernels
(added to the gradient, PyTorch's `Adam(weight_decay=...)`).

Two ways to run the same network (`--styles`):
  loop    time outermost: every layer is called once per step, with that step's BNTT statistics
          (how the paper's authors run their network);
  folded  time folded into the batch (`[B * T, C, H, W]`): each convolution and pool runs once over
          all steps, BNTT is one batch norm over T x C channels, only the LIF recurrence loops.
Prints one JSON line per style: best and median seconds per train step over `--steps` timed steps
(after one untimed warm-up step), and the settings. `cpu_vs_torch.py` and `torch_on_cuda.py` use it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

LEAK, THRESHOLD, SURROGATE_SCALE = 0.99, 1.0, 0.3
BNTT_EPSILON, BNTT_MOMENTUM = 1e-4, 0.1  # PyTorch's momentum: the weight of the new batch
LEARNING_RATE, WEIGHT_DECAY, NUM_CLASSES = 3e-3, 5e-4, 21
# Spiking-DeepLab's units in forward order: (name, output channels at width 1, kernel, dilation,
# followed by a pool).
UNITS = (
    ("conv1_1", 64, 3, 1, False),
    ("conv1_2", 64, 3, 1, True),
    ("conv2_1", 128, 3, 1, False),
    ("conv2_2", 128, 3, 1, True),
    ("conv3_1", 256, 3, 1, False),
    ("conv3_2", 256, 3, 2, False),
    ("conv3_3", 256, 3, 2, False),
    ("fc6", 1024, 3, 12, False),
    ("fc7", 1024, 1, 1, False),
)
STYLES = ("loop", "folded")


class Spike(torch.autograd.Function):
    """Heaviside step on x = u / threshold - 1 (x = 0 does not fire), with the linear surrogate gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * SURROGATE_SCALE * (1.0 - x.abs()).clamp(min=0.0)


def lif(u: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF step: the membrane after the soft reset, and the spikes."""
    u = LEAK * u + current
    spikes = Spike.apply(u / THRESHOLD - 1.0)
    return u - THRESHOLD * spikes.detach(), spikes


def pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=True)


def rate_code(images: torch.Tensor) -> torch.Tensor:
    """Signed Poisson spikes of `images` (any shape): sign(p) where a fresh uniform draw is <= |p|."""
    return torch.sign(images) * (torch.rand_like(images) <= images.abs()).to(images.dtype)


class Unit(nn.Module):
    """Convolution (no bias) -> BNTT -> LIF neurons, for T steps."""

    def __init__(self, in_channels: int, channels: int, kernel: int, dilation: int, timesteps: int):
        super().__init__()
        padding = dilation * (kernel // 2)
        self.conv = nn.Conv2d(in_channels, channels, kernel, padding=padding, dilation=dilation, bias=False)
        nn.init.xavier_uniform_(self.conv.weight, gain=2.0)
        self.gamma = nn.Parameter(torch.ones(timesteps, channels))
        self.register_buffer("running_mean", torch.zeros(timesteps, channels))
        self.register_buffer("running_var", torch.ones(timesteps, channels))

    def bntt_step(self, current: torch.Tensor, t: int) -> torch.Tensor:
        """BNTT of step `t` on `[B, C, H, W]`."""
        return F.batch_norm(
            current,
            self.running_mean[t],
            self.running_var[t],
            self.gamma[t],
            None,
            self.training,
            BNTT_MOMENTUM,
            BNTT_EPSILON,
        )

    def bntt_folded(self, currents: torch.Tensor, timesteps: int) -> torch.Tensor:
        """BNTT of all steps at once on `[B * T, C, H, W]` (row b * T + t): one batch norm over T x C channels."""
        b_t, channels, height, width = currents.shape
        normalized = F.batch_norm(
            currents.reshape(b_t // timesteps, timesteps * channels, height, width),
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.gamma.view(-1),
            None,
            self.training,
            BNTT_MOMENTUM,
            BNTT_EPSILON,
        )
        return normalized.reshape(b_t, channels, height, width)


class SpikingDeepLab(nn.Module):
    """Spiking-DeepLab on images `[B, 3, H, W]` in [-0.5, 0.5]; logits `[B, classes, H, W]`."""

    def __init__(self, timesteps: int, width: float = 1.0, style: str = "loop", num_classes: int = NUM_CLASSES):
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")
        self.timesteps, self.style = timesteps, style
        units, in_channels = [], 3
        for _, channels, kernel, dilation, _ in UNITS:
            channels = max(1, round(channels * width))
            units.append(Unit(in_channels, channels, kernel, dilation, timesteps))
            in_channels = channels
        self.units = nn.ModuleList(units)
        self.pools = [pooled for *_, pooled in UNITS]
        self.output = nn.Conv2d(in_channels, num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.output.weight, gain=2.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self._loop(images) if self.style == "loop" else self._folded(images)
        logits = self.output(features)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=True)

    def _loop(self, images: torch.Tensor) -> torch.Tensor:
        """The last unit's spikes averaged over the steps, running every layer once per step."""
        membranes, total = [0.0] * len(self.units), 0.0
        for t in range(self.timesteps):
            x = rate_code(images)
            for i, (unit, pooled) in enumerate(zip(self.units, self.pools)):
                membranes[i], x = lif(membranes[i], unit.bntt_step(unit.conv(x), t))
                if pooled:
                    x = pool(x)
            total = total + x
        return total / self.timesteps

    def _folded(self, images: torch.Tensor) -> torch.Tensor:
        """The last unit's spikes averaged over the steps, running each layer once over all steps."""
        steps, batch = self.timesteps, images.shape[0]
        x = rate_code(images.unsqueeze(1).expand(-1, steps, -1, -1, -1)).flatten(0, 1)  # [B * T, 3, H, W]
        for unit, pooled in zip(self.units, self.pools):
            currents = unit.bntt_folded(unit.conv(x), steps).unflatten(0, (batch, steps))
            u, spikes = 0.0, []
            for t in range(steps):
                u, s = lif(u, currents[:, t])
                spikes.append(s)
            x = torch.stack(spikes, 1).flatten(0, 1)
            if pooled:
                x = pool(x)
        return x.unflatten(0, (batch, steps)).mean(1)


def make_step(batch: int, timesteps: int, size: int, width: float = 1.0, style: str = "loop"):
    """A zero-argument train step (forward, cross-entropy, BPTT, Adam) on a fixed random batch."""
    torch.manual_seed(0)
    images = torch.rand(batch, 3, size, size) - 0.5
    labels = torch.randint(0, NUM_CLASSES, (batch, size, size))
    model = SpikingDeepLab(timesteps, width, style)
    kernels = [unit.conv.weight for unit in model.units] + [model.output.weight]
    scales = [unit.gamma for unit in model.units]
    optimizer = torch.optim.Adam(
        [{"params": kernels, "weight_decay": WEIGHT_DECAY}, {"params": scales, "weight_decay": 0.0}], lr=LEARNING_RATE
    )

    def step() -> float:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def time_steps(step, steps: int) -> list[float]:
    """Seconds of each of `steps` calls of `step`, after one untimed warm-up call."""
    step()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--timesteps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=3, help="timed train steps per style")
    parser.add_argument("--styles", default="loop,folded", help=f"comma-separated, of: {', '.join(STYLES)}")
    args = parser.parse_args()
    for style in args.styles.split(","):
        seconds = time_steps(make_step(args.batch, args.timesteps, args.size, args.width, style), args.steps)
        result = {
            "impl": f"torch-{style}",
            "train_step_seconds": min(seconds),
            "median_seconds": statistics.median(seconds),
            "batch": args.batch,
            "timesteps": args.timesteps,
            "size": args.size,
            "width": args.width,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
