"""benchmarks/results/adapt/synth-digits.png: ten synth-digits test images of each class
(left, seed 0) beside ten handwritten digits of each class (right, the digits test split).

    python benchmarks/synth_digits_grid.py [OUT.png]
"""

import sys

import numpy as np
from PIL import Image

from genmodels.data import load


def grid(data, per: int = 10) -> np.ndarray:
    out = np.zeros((10 * 9 + 1, per * 9 + 1), np.uint8)
    for k in range(10):
        images = data.images[data.labels == k][:per, 0].numpy().astype(np.float64)
        for j, image in enumerate(images):
            out[1 + k * 9 : 9 + k * 9, 1 + j * 9 : 9 + j * 9] = np.rint(image * 255 / 16)
    return out


def main(path: str) -> None:
    left = grid(load("synth-digits:train=10,val=0,test=200").test)
    right = grid(load("digits").test)
    both = np.hstack([left, np.full((left.shape[0], 4), 128, np.uint8), right])
    h, w = both.shape
    Image.fromarray(both).resize((4 * w, 4 * h), Image.NEAREST).save(path, optimize=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/adapt/synth-digits.png")
