"""Embedded synthetic datasets, generated in numpy from a seed: `shapes` (RGB) and `events` (DVS).

Both draw scenes of objects of four classes over smooth textured backgrounds with clutter (thin
bars labelled background, some of them in front of the objects) and sensor noise. A class is a
shape with its own surface pattern (disk with rings, square with a checkerboard, triangle with
stripes, plain cross), like real categories that differ in outline and appearance; colours, pattern
scale, size, rotation and position are random, so no colour identifies a class. Objects overlap;
later ones occlude earlier ones. Shapes are rendered from signed distances with anti-aliased edges,
so that sub-pixel motion changes intensities smoothly (which the event camera needs).

`events` records scenes as DDD17 does: each scene is a recording of consecutive frames, in which
the objects, the clutter and the background (ego-motion) move, and a DVS pixel emits an event
whenever its log intensity has moved by its contrast threshold since its last event; counts per
frame window give a positive and a negative channel. Each frame is labelled with the segmentation
at the end of its window. An example is the sequence of T frames ending at a frame, within its
recording (`data.split.EventSequences`, as for DDD17).
"""

from __future__ import annotations

import numpy as np

from snnseg_jax.data import preprocess

CLASS_NAMES = ("background", "disk", "square", "triangle", "cross")

MAX_OBJECTS = 3
RADIUS = (0.22, 0.36)  # object radius as a fraction of the image side
CENTRE_RANGE = np.array([0.15, 0.85])  # where object centres are, as fractions of the image side
BRIGHT_LEVELS = (0.75, 1.0)  # per-channel range of a bright object's first colour
DARK_LEVELS = (0.0, 0.3)  # per-channel range of a dark object's first colour
PATTERN_PERIOD = (0.25, 0.35)  # period of the surface patterns, as a fraction of the image side
BACKGROUND_LEVEL = (0.35, 0.6)  # grey level of the background
BACKGROUND_PERIOD = (0.4, 1.2)  # period of the background gratings, as a fraction of the image side
BACKGROUND_AMPLITUDE = 0.1  # colour amplitude of the background gratings
CLUTTER_BARS = 4  # candidate thin bars per scene, each present with probability 1/2, half in front
GAIN = (0.85, 1.1)  # range of the per-image exposure gain (static images)
NOISE_STD = 0.04  # Gaussian pixel noise (static images)
SUBSTEPS = 3  # renderings per event frame window
CONTRAST_THRESHOLD = 0.15  # DVS log-intensity step per event, before per-pixel mismatch
NOISE_EVENT_RATE = 0.01  # spurious events per pixel per window and polarity
RECORDING_FRAMES = 20  # frames per recording of `events`


def _rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, sum(split.encode())])


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates `[1, H, W]` (y, x)."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    return coords[None, :, None], coords[None, None, :]


def rotate(dy: np.ndarray, dx: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets `[N, H, W]` in the frame of an object turned by `angle` `[N]`: (along, across)."""
    a = angle[:, None, None]
    return np.cos(a) * dx + np.sin(a) * dy, -np.sin(a) * dx + np.cos(a) * dy


def shape_distance(kind: np.ndarray, u: np.ndarray, v: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Approximate signed distance (pixels, negative inside) to shape `kind` (1..4, per scene).

    `u`, `v`: `[N, H, W]` offsets from the centre in the object's frame; `radius`, `kind`: `[N]`.
    """
    r = radius[:, None, None]
    disk = np.sqrt(u * u + v * v) - r
    square = np.maximum(np.abs(u), np.abs(v)) - 0.8 * r
    normals = [(np.cos(t), np.sin(t)) for t in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3)]
    triangle = np.max([nx * u + ny * v for nx, ny in normals], axis=0) - 0.55 * r
    arm = 0.33 * r
    cross = np.minimum(np.maximum(np.abs(u) - r, np.abs(v) - arm), np.maximum(np.abs(u) - arm, np.abs(v) - r))
    return np.choose((kind - 1)[:, None, None], [disk, square, triangle, cross])


def surface_pattern(kind: np.ndarray, u: np.ndarray, v: np.ndarray, period: np.ndarray) -> np.ndarray:
    """The pattern of class `kind` in [0, 1] (0: the object's first colour, 1: its second).

    Rings (disk), checkerboard (square), stripes (triangle), plain (cross); arguments as in
    `shape_distance`, `period` in pixels.
    """
    w = 2 * np.pi / period[:, None, None]
    soft_sign = lambda z: np.clip(2.0 * z, -1.0, 1.0)
    rings = soft_sign(np.cos(w * np.sqrt(u * u + v * v)))
    checker = soft_sign(np.sin(w * u) * np.sin(w * v) * 2.0)
    stripes = soft_sign(np.sin(w * u))
    plain = -np.ones_like(u)
    return 0.5 + 0.5 * np.choose((kind - 1)[:, None, None], [rings, checker, stripes, plain])


def segment_distance(u: np.ndarray, v: np.ndarray, half_length: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """Signed distance to a bar (a segment with round ends); arguments as in `shape_distance`."""
    hl = half_length[:, None, None]
    along = np.clip(u, -hl, hl)
    return np.sqrt((u - along) ** 2 + v * v) - half_width[:, None, None]


def coverage(distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a pixel by a shape, from its signed distance."""
    return np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)


def grating(rng: np.random.Generator, n: int, size: int, waves: int, channels: int) -> dict:
    """Parameters of a random background texture: a sum of `waves` sinusoidal gratings per scene."""
    period = rng.uniform(BACKGROUND_PERIOD[0] * size, BACKGROUND_PERIOD[1] * size, (n, waves))
    theta = rng.uniform(0, np.pi, (n, waves))
    return dict(
        fy=(2 * np.pi / period * np.sin(theta)),
        fx=(2 * np.pi / period * np.cos(theta)),
        phase=rng.uniform(0, 2 * np.pi, (n, waves)),
        colour=rng.uniform(-BACKGROUND_AMPLITUDE, BACKGROUND_AMPLITUDE, (n, waves, channels)) / waves,
    )


def texture(params: dict, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Texture `[N, H, W, channels]` at coordinates `y`, `x` (broadcastable to `[N, H, W]`)."""
    out = 0.0
    for w in range(params["fy"].shape[1]):
        arg = (
            params["fy"][:, w, None, None] * y + params["fx"][:, w, None, None] * x + params["phase"][:, w, None, None]
        )
        out = out + np.sin(arg)[..., None] * params["colour"][:, None, None, w]
    return out


def _scene(rng: np.random.Generator, n: int, size: int, channels: int) -> dict:
    """Random scene parameters for `n` images: background, objects, clutter."""
    # Objects are pale (bright) or deep (dark) tints; the second colour of a pattern is the first's
    # complement. Strong, coarse contrasts are what survives rate coding over a few time steps.
    bright = rng.random((n, MAX_OBJECTS, 1)) < 0.5
    first = np.where(
        bright,
        rng.uniform(*BRIGHT_LEVELS, (n, MAX_OBJECTS, channels)),
        rng.uniform(*DARK_LEVELS, (n, MAX_OBJECTS, channels)),
    )
    scene = dict(
        background=np.repeat(rng.uniform(*BACKGROUND_LEVEL, (n, 1)), channels, axis=1),
        background_texture=grating(rng, n, size, 3, channels),
        background_velocity=rng.uniform(-1.0, 1.0, (n, 2)),
        objects=dict(
            kind=rng.integers(1, len(CLASS_NAMES), (n, MAX_OBJECTS)),
            centre=rng.uniform(CENTRE_RANGE[0] * size, CENTRE_RANGE[1] * size, (n, MAX_OBJECTS, 2)),
            radius=rng.uniform(RADIUS[0] * size, RADIUS[1] * size, (n, MAX_OBJECTS)),
            angle=rng.uniform(0, 2 * np.pi, (n, MAX_OBJECTS)),
            velocity=rng.normal(0, 1, (n, MAX_OBJECTS, 2)),
            colours=np.stack([first, 1.0 - first], axis=2),  # [n, objects, 2, C]
            period=rng.uniform(PATTERN_PERIOD[0] * size, PATTERN_PERIOD[1] * size, (n, MAX_OBJECTS)),
        ),
        count=rng.integers(1, MAX_OBJECTS + 1, n),
        bars=dict(
            centre=rng.uniform(0, size, (n, CLUTTER_BARS, 2)),
            half_length=rng.uniform(0.1 * size, 0.4 * size, (n, CLUTTER_BARS)),
            angle=rng.uniform(0, np.pi, (n, CLUTTER_BARS)),
            half_width=rng.uniform(0.4, 1.0, (n, CLUTTER_BARS)),
            present=rng.random((n, CLUTTER_BARS)) < 0.5,
            velocity=rng.normal(0, 1, (n, CLUTTER_BARS, 2)),
            colour=rng.uniform(0.0, 1.0, (n, CLUTTER_BARS, channels)),
            in_front=rng.random((n, CLUTTER_BARS)) < 0.5,
        ),
    )
    # Objects move 0.7 to 2 pixels per frame window in a random direction.
    v = scene["objects"]["velocity"]
    speed = rng.uniform(0.7, 2.0, v.shape[:2])
    scene["objects"]["velocity"] = v / np.linalg.norm(v, axis=-1, keepdims=True) * speed[..., None]
    return _float32(scene)


def _float32(tree):
    """Float arrays of a nested dict / list as float32 (rendering in float64 is twice as slow)."""
    if isinstance(tree, dict):
        return {k: _float32(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_float32(v) for v in tree]
    return tree.astype(np.float32) if tree.dtype == np.float64 else tree


def bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    """`position` folded back into [low, high] as by reflections off its ends (unchanged inside)."""
    period = 2 * (high - low)
    folded = np.mod(position - low, period)
    reflected = low + np.where(folded > high - low, period - folded, folded)
    return np.where((position >= low) & (position <= high), position, reflected).astype(position.dtype)


def render(scene: dict, size: int, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The scene at time `t` (in frame windows): image `[N, H, W, C]` in [0, 1], labels `[N, H, W]`."""
    y, x = _grid(size)
    bg_shift = scene["background_velocity"][:, :, None, None] * t
    image = scene["background"][:, None, None] + texture(
        scene["background_texture"], y - bg_shift[:, 0], x - bg_shift[:, 1]
    )
    n = image.shape[0]
    labels = np.zeros((n, size, size), np.uint8)
    bars = scene["bars"]

    def paint_bars(in_front: bool) -> None:
        nonlocal image
        for b in range(CLUTTER_BARS):
            centre = bounce(bars["centre"][:, b] + bars["velocity"][:, b] * t, 0.0, size)
            u, v = rotate(y - centre[:, 0, None, None], x - centre[:, 1, None, None], bars["angle"][:, b])
            alpha = coverage(segment_distance(u, v, bars["half_length"][:, b], bars["half_width"][:, b]))
            alpha *= (bars["present"][:, b] & (bars["in_front"][:, b] == in_front))[:, None, None]
            image = image * (1 - alpha[..., None]) + bars["colour"][:, b, None, None] * alpha[..., None]
            if in_front:
                labels[alpha > 0.5] = 0

    paint_bars(in_front=False)
    obj = scene["objects"]
    for i in range(MAX_OBJECTS):
        centre = bounce(obj["centre"][:, i] + obj["velocity"][:, i] * t, *CENTRE_RANGE * np.float32(size))
        u, v = rotate(y - centre[:, 0, None, None], x - centre[:, 1, None, None], obj["angle"][:, i])
        kind = obj["kind"][:, i]
        alpha = coverage(shape_distance(kind, u, v, obj["radius"][:, i]))
        alpha *= (i < scene["count"])[:, None, None]
        pattern = surface_pattern(kind, u, v, obj["period"][:, i])[..., None]  # moves with the object
        colours = obj["colours"][:, i, :, None, None]
        fill = colours[:, 0] * (1 - pattern) + colours[:, 1] * pattern
        image = image * (1 - alpha[..., None]) + fill * alpha[..., None]
        labels = np.where(alpha > 0.5, obj["kind"][:, i, None, None].astype(np.uint8), labels)
    paint_bars(in_front=True)
    return np.clip(image, 0.0, 1.0).astype(np.float32), labels


def shapes(seed: int, split: str, num_images: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Static RGB scenes: normalized images `[N, H, W, 3]` and labels `[N, H, W]` (uint8)."""
    rng = _rng(seed, split)
    scene = _scene(rng, num_images, size, channels=3)
    image, labels = render(scene, size, t=0.0)
    gain = rng.uniform(*GAIN, (num_images, 1, 1, 1))
    noise = rng.normal(0.0, NOISE_STD, image.shape)
    image = np.clip(image * gain + noise, 0.0, 1.0)
    return preprocess.standardize_rgb(image * 255.0), labels


def dvs_events(log_intensity: np.ndarray, threshold: np.ndarray, reference: np.ndarray) -> tuple:
    """Events of one rendering: per-pixel (positive, negative) counts and the updated reference."""
    change = log_intensity - reference
    count = np.floor(np.abs(change) / threshold)
    reference = reference + np.sign(change) * count * threshold
    return np.where(change > 0, count, 0.0), np.where(change < 0, count, 0.0), reference


def event_recordings(
    seed: int, split: str, num_frames: int, size: int, recording_frames: int = RECORDING_FRAMES
) -> tuple[np.ndarray, ...]:
    """Event recordings, as DDD17 holds them: `num_frames` frames of `recording_frames` each.

    Returns frames `[N, H, W, 2]` (counts over one window, normalized per frame and channel), the
    segmentation at the end of each frame's window `[N, H, W]` (uint8), and each frame's recording
    and frame number `[N]` (the last recording may be shorter). A scene runs through its whole
    recording: objects and clutter bounce off the borders, the background drifts.
    """
    rng = _rng(seed, split)
    count = -(-num_frames // recording_frames)
    scene = _scene(rng, count, size, channels=1)
    threshold = CONTRAST_THRESHOLD * np.clip(rng.normal(1.0, 0.1, (count, size, size)), 0.5, 1.5)

    def log_intensity(t: float) -> tuple[np.ndarray, np.ndarray]:
        image, labels = render(scene, size, t)
        return np.log(0.05 + image[..., 0]), labels

    reference, _ = log_intensity(0.0)
    counts = np.zeros((count, recording_frames, size, size, 2), np.float32)
    labels = np.zeros((count, recording_frames, size, size), np.uint8)
    for f in range(recording_frames):
        for s in range(1, SUBSTEPS + 1):
            current, labels[:, f] = log_intensity(f + s / SUBSTEPS)
            positive, negative, reference = dvs_events(current, threshold, reference)
            counts[:, f, ..., 0] += positive
            counts[:, f, ..., 1] += negative
    counts += rng.random(counts.shape) < NOISE_EVENT_RATE
    flat = lambda a: a.reshape(-1, *a.shape[2:])[:num_frames]
    recordings = np.repeat(np.arange(count), recording_frames)[:num_frames]
    frame_numbers = np.tile(np.arange(recording_frames), count)[:num_frames]
    return preprocess.minmax_event_frames(flat(counts)), flat(labels), recordings, frame_numbers
