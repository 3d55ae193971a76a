"""A small PASCAL VOC2012-layout dataset made of real photographs, for end-to-end checks.

    pip install scikit-image   # its wheel bundles the photographs used here
    python -m reproduce.make_photo_voc --out /tmp/photo_voc [--train 600 --val 150 --seed 0]

What it is: every image is a crop of a real photograph (background) onto which one to three
objects are pasted, each a patch of another real photograph cut out with a random mask (ellipse,
triangle or rotated rectangle). The label of a pixel is the class of the photograph it came from,
known exactly by construction, with a 255 band along every object boundary as in VOC:
  cat (8): the cat photograph `chelsea`; motorbike (14): the motorbike in `motorcycle_left`;
  person (15): the 100 face photographs of `lfw_subset`; background (0): `rocket`, `coffee`,
  `hubble_deep_field`, `grass`, `gravel`, `brick`.
Training images take their crops from the left 60% of each photograph and faces 0-74; validation
images from the right 40% and faces 75-99, so validation shows unseen parts of the photographs.
Written as JPEGImages (sizes 96-160 px), SegmentationClass (palette PNGs), SegmentationClassAug
(grayscale PNGs), ImageSets/Segmentation/{train,val}.txt (bare ids) and train_aug.txt (pairs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from snnseg_jax.data.voc import save_label_png

BACKGROUNDS = ("rocket", "coffee", "hubble_deep_field", "grass", "gravel", "brick")
CAT, MOTORBIKE, PERSON = 8, 14, 15
MOTORBIKE_BOX = (0.24, 0.11, 0.92, 0.89)  # (top, left, bottom, right) of the bike in motorcycle_left
TRAIN_FRACTION = 0.6


def photographs() -> dict[str, np.ndarray]:
    """The bundled photographs as RGB uint8, and the face crops as `[100, 25, 25, 3]`."""
    import skimage
    import skimage.data

    folder = Path(skimage.__file__).parent / "data"
    rgb = lambda a: np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a[..., :3]
    photos = {name: rgb(getattr(skimage.data, name)()) for name in BACKGROUNDS + ("chelsea",)}
    bike = np.asarray(Image.open(folder / "motorcycle_left.png").convert("RGB"))
    top, left, bottom, right = (int(f * s) for f, s in zip(MOTORBIKE_BOX, bike.shape[:2] * 2))
    photos["motorbike"] = bike[top:bottom, left:right]
    faces = np.load(folder / "lfw_subset.npy")[:100]  # the first 100 are faces
    photos["faces"] = np.repeat((faces * 255).astype(np.uint8)[..., None], 3, axis=-1)
    return photos


def region(photo: np.ndarray, split: str) -> np.ndarray:
    """The columns of a photograph that a split may crop from."""
    cut = int(photo.shape[1] * TRAIN_FRACTION)
    return photo[:, :cut] if split == "train" else photo[:, cut:]


def random_crop(rng: np.random.Generator, photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """A crop of random size and place (at least a quarter of the photo's side), resized."""
    h, w = photo.shape[:2]
    ch, cw = rng.integers(max(8, h // 4), h + 1), rng.integers(max(8, w // 4), w + 1)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = Image.fromarray(np.ascontiguousarray(photo[y : y + ch, x : x + cw]))
    return np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR))


def random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A filled ellipse, triangle or rotated rectangle inside a `height` x `width` box."""
    canvas = Image.new("L", (width, height))
    draw = ImageDraw.Draw(canvas)
    kind = rng.integers(3)
    if kind == 0:
        draw.ellipse((0, 0, width - 1, height - 1), fill=1)
    else:
        corners = 3 if kind == 1 else 4
        angles = rng.uniform(0, 2 * np.pi) + np.arange(corners) * 2 * np.pi / corners
        points = [((0.5 + 0.5 * np.cos(a)) * (width - 1), (0.5 + 0.5 * np.sin(a)) * (height - 1)) for a in angles]
        draw.polygon(points, fill=1)
    return np.asarray(canvas, bool)


def object_patch(rng: np.random.Generator, photos: dict, split: str, cls: int, h: int, w: int) -> np.ndarray:
    if cls == PERSON:
        faces = photos["faces"][:75] if split == "train" else photos["faces"][75:]
        face = faces[rng.integers(len(faces))]
        return np.asarray(Image.fromarray(face).resize((w, h), Image.Resampling.BILINEAR))
    source = photos["chelsea"] if cls == CAT else photos["motorbike"]
    return random_crop(rng, region(source, split), h, w)


def boundary_band(label: np.ndarray) -> np.ndarray:
    """Pixels within one pixel of a change of class (a 3-pixel band, like VOC's borders)."""
    padded = np.pad(label, 1, mode="edge")
    h, w = label.shape
    shifted = [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    return np.max(shifted, axis=0) != np.min(shifted, axis=0)


def compose(rng: np.random.Generator, photos: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One image and its label."""
    height, width = (int(v) for v in rng.integers(96, 161, 2))
    background = photos[BACKGROUNDS[rng.integers(len(BACKGROUNDS))]]
    image = random_crop(rng, region(background, split), height, width).copy()
    label = np.zeros((height, width), np.uint8)
    for _ in range(rng.integers(1, 4)):
        cls = (CAT, MOTORBIKE, PERSON)[rng.integers(3)]
        side = rng.uniform(0.35, 0.65) * min(height, width)
        h, w = (int(side * f) for f in rng.uniform(0.75, 1.33, 2))
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        mask = random_mask(rng, h, w)
        patch = object_patch(rng, photos, split, cls, h, w)
        image[y : y + h, x : x + w][mask] = patch[mask]
        label[y : y + h, x : x + w][mask] = cls
    label[boundary_band(label)] = 255
    return image, label


def write_dataset(out: Path, num_train: int, num_val: int, seed: int) -> Path:
    """Write the dataset under `out/VOCdevkit/VOC2012`; return `out`."""
    rng = np.random.default_rng(seed)
    photos = photographs()
    voc = out / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    lists = {"train": [], "val": []}
    for split, count in (("train", num_train), ("val", num_val)):
        for i in range(count):
            image_id = f"2012_{split}_{i:05d}"
            image, label = compose(rng, photos, split)
            Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
            Image.fromarray(label).save(voc / "SegmentationClassAug" / f"{image_id}.png")
            save_label_png(label, voc / "SegmentationClass" / f"{image_id}.png")
            lists[split].append(image_id)
    segmentation = voc / "ImageSets" / "Segmentation"
    for split, ids in lists.items():
        (segmentation / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (segmentation / "train_aug.txt").write_text(
        "".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in lists["train"])
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--val", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {write_dataset(args.out, args.train, args.val, args.seed)}")


if __name__ == "__main__":
    main()
