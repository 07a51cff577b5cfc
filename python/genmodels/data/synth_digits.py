"""`synth-digits`: printed digits rendered from the fonts inside matplotlib, reduced as optdigits.

The embedded *source* domain of `genmodels adapt` (the target being the handwritten
`digits`). Each image is made offline, in memory, from a seeded NumPy generator:

1. a font: every TrueType file in matplotlib's ``mpl-data/fonts/ttf`` whose glyphs for the
   characters 0-9 are the digits (glyph names ``zero`` .. ``nine``, old-style figures
   included): the DejaVu Sans, Sans Mono and Serif families, STIXGeneral and the Computer
   Modern fonts cmr10, cmb10, cmss10, cmti10, cmtt10 and cmmi10 (22 fonts with matplotlib
   3.x); fonts whose 0-9 code points hold symbols (cmsy10, cmex10) or nothing are left out;
2. the digit drawn white on black with PIL at a random size (40-64 px), with a random
   stroke added around the outline (0-5% of the size: printed strokes are thinner than
   pen strokes), then a random rotation (+-15 degrees) and horizontal shear (+-0.3)
   about its centre, bilinear;
3. the reduction of the UCI optdigits set (the origin of scikit-learn's digits), whose
   NIST preprocessing fits each character into a 32x32 bitmap: thresholded at half
   intensity, cropped to its bounding box, scaled to the full height (95-100% of 32 px, at
   random) and, where that makes it wider than 20 px, squeezed to 20 px wide (the handwritten
   digits are 32 px tall and at most 20 px wide: block rows 0-7 and columns 1-6 in the 8x8
   images), area-resampled and thresholded again, placed at a random position around the
   centre (+-2 px horizontally, anywhere vertically that keeps it whole); then the 8x8
   image counts the set pixels of each 4x4 block: 17 levels, 0..16.

Labels are balanced (each class a tenth of a split, shuffled). Each split is drawn from its
own stream (`numpy.random.SeedSequence((seed, split))`), so the test images do not change
when the training set grows. With ``$GENMODELS_CACHE`` set, the arrays are cached there as
an ``.npz`` (loaded with ``allow_pickle=False``) keyed by the sizes, the seed, the renderer's
version and the font files.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import math
import os
import tempfile

import numpy as np
import torch

from genmodels.data.datasets import ImageDataset, Splits

RENDER_VERSION = 1
DEFAULT_SIZES = (10000, 2000, 2000)
LEVELS = 17
BITMAP = 32  # optdigits' bitmap side
BLOCK = 4  # 32x32 bitmap -> 8x8 counts of 4x4 blocks
MAX_WIDTH = 20  # the widest character in the handwritten set's 32x32 bitmaps
FONT_SIZES = (40, 48, 56, 64)
STROKE = (0.0, 0.05)  # stroke width as a fraction of the font size
ROTATION_DEGREES = 15.0
SHEAR = 0.3
HEIGHT = (0.95, 1.0)  # fraction of the 32 px the character's height is scaled to
JITTER = 2  # horizontal offset from the centre, in bitmap pixels

_DIGIT_GLYPHS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _needs():
    try:
        import matplotlib
        from PIL import ImageFont  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "synth-digits renders the fonts that ship inside matplotlib with Pillow: "
            "pip install matplotlib pillow"
        ) from exc
    return matplotlib


def digit_fonts() -> list[str]:
    """Paths of matplotlib's TrueType fonts whose 0-9 code points are the ten digits."""
    from matplotlib.ft2font import FT2Font

    folder = os.path.join(os.path.dirname(_needs().__file__), "mpl-data", "fonts", "ttf")
    fonts = []
    for path in sorted(glob.glob(os.path.join(folder, "*.ttf"))):
        font = FT2Font(path)
        names = [font.get_glyph_name(font.get_char_index(ord(str(d)))) for d in range(10)]
        if all(n in (g, g + "oldstyle") for n, g in zip(names, _DIGIT_GLYPHS, strict=True)):
            fonts.append(path)
    if not fonts:
        raise RuntimeError(f"{folder}: no TrueType font with the ten digits (matplotlib fonts)")
    return fonts


class _Renderer:
    def __init__(self, fonts: list[str]):
        from PIL import ImageFont

        self.fonts = fonts
        self._truetype = ImageFont.truetype
        self._cache: dict[tuple[int, int], object] = {}

    def font(self, index: int, size: int):
        key = (index, size)
        if key not in self._cache:
            self._cache[key] = self._truetype(self.fonts[index], size)
        return self._cache[key]

    def bitmap(self, rng: np.random.Generator, digit: int) -> np.ndarray:
        """One 32x32 boolean bitmap of `digit` (steps 1-3 of the module docstring)."""
        from PIL import Image, ImageDraw

        font = self.font(int(rng.integers(len(self.fonts))), int(rng.choice(FONT_SIZES)))
        stroke = rng.uniform(*STROKE) * font.size
        theta = math.radians(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
        shear = rng.uniform(-SHEAR, SHEAR)
        height = rng.uniform(*HEIGHT)
        jitter = int(rng.integers(-JITTER, JITTER + 1))
        vertical = rng.random()

        text = str(digit)
        left, top, right, bottom = font.getbbox(text, stroke_width=stroke, anchor="mm")
        side = int(1.3 * math.hypot(right - left, bottom - top)) + 4  # room to rotate
        image = Image.new("L", (side, side), 0)
        draw = ImageDraw.Draw(image)
        centre = side / 2
        draw.text((centre, centre), text, font=font, fill=255, anchor="mm",
                  stroke_width=stroke, stroke_fill=255)  # fmt: skip
        # Shear, then rotate, about the centre; PIL's AFFINE takes the output-to-input map.
        c, s = math.cos(theta), math.sin(theta)
        forward = np.array([[c, -s], [s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]])
        inverse = np.linalg.inv(forward)
        offset = centre - inverse @ np.array([centre, centre])
        image = image.transform(
            image.size, Image.Transform.AFFINE,
            (*inverse[0], offset[0], *inverse[1], offset[1]), resample=Image.Resampling.BILINEAR,
        )  # fmt: skip

        ink = np.asarray(image) >= 128
        rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
        out = np.zeros((BITMAP, BITMAP), dtype=bool)
        if not len(rows):  # nothing survived thresholding (not seen with these fonts)
            return out
        glyph = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        h, w = glyph.shape
        scale = BITMAP * height / h
        new_h = max(1, min(BITMAP, round(h * scale)))
        new_w = max(1, min(MAX_WIDTH, round(w * scale)))
        small = Image.fromarray(glyph.astype(np.uint8) * 255).resize(
            (new_w, new_h), Image.Resampling.BOX
        )
        small = np.asarray(small) >= 128
        x0 = min(max((BITMAP - new_w) // 2 + jitter, 0), BITMAP - new_w)
        y0 = int(vertical * (BITMAP - new_h + 1))
        out[y0 : y0 + new_h, x0 : x0 + new_w] = small
        return out


def block_counts(bitmaps: np.ndarray) -> np.ndarray:
    """[N, 32, 32] booleans -> [N, 8, 8] uint8 counts of set pixels per 4x4 block (0..16)."""
    n = bitmaps.shape[0]
    side = BITMAP // BLOCK
    blocks = bitmaps.reshape(n, side, BLOCK, side, BLOCK)
    return blocks.sum(axis=(2, 4), dtype=np.int64).astype(np.uint8)


def render(n: int, seed: int, split: int = 0, fonts: list[str] | None = None):
    """(images uint8 [n, 8, 8] in 0..16, labels int64 [n]) of one split's stream."""
    rng = np.random.default_rng(np.random.SeedSequence((seed, split)))
    labels = rng.permutation(np.arange(n) % 10)
    renderer = _Renderer(fonts or digit_fonts())
    bitmaps = np.zeros((n, BITMAP, BITMAP), dtype=bool)
    for i, digit in enumerate(labels):
        bitmaps[i] = renderer.bitmap(rng, int(digit))
    return block_counts(bitmaps), labels.astype(np.int64)


def _check_sizes(sizes) -> tuple[int, int, int]:
    sizes = tuple(sizes)
    if len(sizes) != 3 or any(isinstance(s, bool) or not isinstance(s, int) for s in sizes):
        raise ValueError(f"synth-digits sizes must be three ints (train, val, test), got {sizes}")
    if sizes[0] < 10 or min(sizes) < 0:
        raise ValueError(f"synth-digits needs at least 10 training images, got sizes {sizes}")
    return sizes  # type: ignore[return-value]


def _cache_path(sizes, seed, fonts) -> str | None:
    folder = os.environ.get("GENMODELS_CACHE")
    if not folder:
        return None
    key = repr((RENDER_VERSION, sizes, seed, [os.path.basename(f) for f in fonts]))
    for path in fonts:
        key += f"{os.path.getsize(path)}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(folder, f"synth-digits-{digest}.npz")


def _write_npz(path: str, arrays: dict) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".synth-digits-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_npz(path: str) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError):
        return None  # a damaged cache entry is rendered again and replaced


def load_synth_digits(sizes=DEFAULT_SIZES, seed: int = 0) -> Splits:
    """The synth-digits splits (train, val, test) of the given sizes, 8x8, 17 levels.

    Rendered once per process for given sizes and seed (about a millisecond of CPU per
    image), and once per machine with $GENMODELS_CACHE set."""
    return _load(_check_sizes(sizes), int(seed))


@functools.lru_cache(maxsize=4)
def _load(sizes: tuple[int, int, int], seed: int) -> Splits:
    fonts = digit_fonts()
    cache = _cache_path(sizes, seed, fonts)
    arrays = _read_npz(cache) if cache and os.path.isfile(cache) else None
    names = ("train", "val", "test")
    if arrays is None or any(f"{n}_images" not in arrays for n in names):
        arrays = {}
        for split, (name, n) in enumerate(zip(names, sizes, strict=True)):
            images, labels = render(n, seed, split, fonts)
            arrays[f"{name}_images"], arrays[f"{name}_labels"] = images, labels
        if cache:
            _write_npz(cache, arrays)

    def dataset(name):
        images = torch.from_numpy(arrays[f"{name}_images"].astype(np.uint8)).unsqueeze(1)
        labels = torch.from_numpy(arrays[f"{name}_labels"].astype(np.int64))
        return ImageDataset(images, labels, levels=LEVELS, name=f"synth-digits/{name}")

    return Splits(*(dataset(n) for n in names))


def parse_options(options: str) -> dict:
    """`train=N,val=N,test=N,seed=S` (any subset) -> keyword arguments of load_synth_digits."""
    sizes = dict(zip(("train", "val", "test"), DEFAULT_SIZES, strict=True))
    seed = 0
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key not in (*sizes, "seed") or not value.lstrip("-").isdigit():
            raise ValueError(f"synth-digits options are train=N,val=N,test=N,seed=S; got {item!r}")
        if key == "seed":
            seed = int(value)
        else:
            sizes[key] = int(value)
    return {"sizes": tuple(sizes.values()), "seed": seed}
