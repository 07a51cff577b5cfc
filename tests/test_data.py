import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from genmodels.data import load, load_cifar10, load_folder, load_mnist


def test_digits_split_is_fixed_and_disjoint():
    splits = load("digits")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1000, 350, 447)
    assert splits.levels == 17 and splits.train.shape == (1, 8, 8)
    assert splits.train.images.dtype == torch.uint8 and int(splits.train.images.max()) == 16
    again = load("digits")
    assert torch.equal(splits.test.images, again.test.images)
    flat = [s.images.flatten(1) for s in (splits.train, splits.val, splits.test)]
    everything = torch.cat(flat)
    # The split covers every image once (rows of the full set are almost all distinct).
    assert len(everything) == 1797
    assert set(splits.test.labels.tolist()) == set(range(10))


def _write_idx(path, array, gz=False, magic=None):
    array = np.asarray(array, dtype=np.uint8)
    header = magic if magic is not None else struct.pack(">HBB", 0, 8, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    opener = gzip.open if gz else open
    with opener(path + (".gz" if gz else ""), "wb") as f:
        f.write(data)


def _mnist(directory, n_train=30, n_test=12, gz=False):
    rng = np.random.default_rng(0)
    os.makedirs(directory, exist_ok=True)
    train = rng.integers(0, 256, (n_train, 28, 28))
    _write_idx(os.path.join(directory, "train-images-idx3-ubyte"), train, gz)
    _write_idx(os.path.join(directory, "train-labels-idx1-ubyte"), rng.integers(0, 10, n_train), gz)
    _write_idx(
        os.path.join(directory, "t10k-images-idx3-ubyte"),
        rng.integers(0, 256, (n_test, 28, 28)),
        gz,
    )
    _write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte"), rng.integers(0, 10, n_test), gz)
    return train


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_mnist_reads_idx_files(tmp_path, gz):
    train = _mnist(str(tmp_path), gz=gz)
    splits = load(f"mnist:{tmp_path}")
    assert splits.levels == 256 and splits.train.shape == (1, 28, 28)
    assert len(splits.train) + len(splits.val) == 30 and len(splits.test) == 12
    assert sorted(torch.cat([splits.train.images, splits.val.images]).flatten().tolist()) == sorted(
        train.flatten().tolist()
    )
    binary = load_mnist(str(tmp_path), binarize=True)
    assert binary.levels == 2 and int(binary.train.images.max()) == 1


def test_mnist_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load(f"mnist:{tmp_path / 'nowhere'}")
    _mnist(str(tmp_path))
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load(f"mnist:{tmp_path}")
    _mnist(str(tmp_path))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*bytes, expected"):
        load(f"mnist:{tmp_path}")
    _write_idx(str(path), np.zeros((2, 3, 3)), magic=b"\x00\x00\x0d\x03")
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        load(f"mnist:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot be read"):
        load(f"mnist:{tmp_path}")


def test_mnist_corrupt_gzip_names_the_path(tmp_path):
    _mnist(str(tmp_path), gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    images = np.zeros((30, 28, 28), dtype=np.uint8)
    header = struct.pack(">HBBIII", 0, 8, 3, 30, 28, 28)
    packed = bytearray(gzip.compress(header + images.tobytes()))
    packed[12:16] = bytes(b ^ 0xFF for b in packed[12:16])  # a broken deflate stream
    path.write_bytes(bytes(packed))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: cannot be read as gzip"):
        load(f"mnist:{tmp_path}")
    _mnist(str(tmp_path), gz=True)
    path.write_bytes(path.read_bytes()[:-20])  # cut short: EOFError inside gzip
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: cannot be read as gzip"):
        load(f"mnist:{tmp_path}")


def test_mnist_header_shape_that_overflows_int64(tmp_path):
    _mnist(str(tmp_path))
    # 2^31 * 2^31 * 4 = 2^64 wraps to 0 in int64: the header alone would "match".
    header = struct.pack(">HBBIII", 0, 8, 3, 2**31, 2**31, 4)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: 16 bytes, expected \d{20}"):
        load(f"mnist:{tmp_path}")


@pytest.mark.parametrize("spec", ["digits", "cifar10:DIR", "folder:DIR"])
def test_binarize_is_refused_where_it_does_not_apply(tmp_path, spec):
    _cifar(str(tmp_path))
    with pytest.raises(ValueError, match="binarize.*mnist:DIR only"):
        load(spec.replace("DIR", str(tmp_path)), binarize=True)


def _cifar(directory, n=8):
    rng = np.random.default_rng(1)
    os.makedirs(directory, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, n)),
        }
        with open(os.path.join(directory, name), "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_reads_python_batches(tmp_path):
    _cifar(str(tmp_path / "cifar-10-batches-py"))
    splits = load(f"cifar10:{tmp_path}")
    assert splits.train.shape == (3, 32, 32) and splits.levels == 256
    assert len(splits.train) + len(splits.val) == 40 and len(splits.test) == 8


def test_cifar10_errors(tmp_path):
    _cifar(str(tmp_path))
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(str(tmp_path))
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="data_batch_3.*not a CIFAR-10 python batch"):
        load_cifar10(str(tmp_path))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="refusing to load"):
        load_cifar10(str(tmp_path))


@pytest.mark.parametrize(
    "key, value, words",
    [
        (b"data", np.full((8, 3072), 773.2), "pixel values .* must be integers, got dtype float64"),
        (b"data", np.full((8, 3072), -133), r"pixel values .* must lie in 0..255, got -133..-133"),
        (b"data", np.full((8, 3072), 300, dtype=np.int16), "pixel values .* must lie in 0..255"),
        (b"labels", [0, 1, 2, 3, 4, 5, 6, 10], r"labels .* must lie in 0..9, got 0..10"),
        (b"labels", [-1, 1, 2, 3, 4, 5, 6, 7], r"labels .* must lie in 0..9, got -1..7"),
        (b"labels", [0.5] * 8, "labels .* must be integers, got dtype float64"),
    ],
)
def test_cifar10_values_out_of_range_are_refused_not_wrapped(tmp_path, key, value, words):
    _cifar(str(tmp_path))
    path = tmp_path / "data_batch_2"
    with open(path, "rb") as f:
        batch = pickle.load(f)
    batch[key] = value
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(ValueError, match=f"data_batch_2: {words}"):
        load_cifar10(str(tmp_path))


def test_cifar10_accepts_wider_integers_in_range(tmp_path):
    _cifar(str(tmp_path))
    path = tmp_path / "test_batch"
    with open(path, "rb") as f:
        batch = pickle.load(f)
    batch[b"data"] = batch[b"data"].astype(np.int64)
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    splits = load_cifar10(str(tmp_path))
    assert splits.test.images.dtype == torch.uint8
    assert torch.equal(splits.test.images.flatten(1), torch.from_numpy(batch[b"data"]).byte())


def test_folder_of_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(10):
            pixels = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    splits = load_folder(str(tmp_path))
    assert splits.train.shape == (3, 6, 5)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 20
    labels = torch.cat([splits.train.labels, splits.val.labels, splits.test.labels])
    assert sorted(labels.tolist()) == [0] * 10 + [1] * 10
    Image.fromarray(rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)).save(
        tmp_path / "dog" / "odd.png"
    )
    with pytest.raises(ValueError, match="odd.png: size"):
        load_folder(str(tmp_path))
    (tmp_path / "dog" / "odd.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="odd.png: not a readable image"):
        load_folder(str(tmp_path))


@pytest.mark.parametrize("spec", ["digitz", "mnist", "mnist:", "imagenet:/data", 3])
def test_bad_spec(spec):
    with pytest.raises((ValueError, TypeError), match="data must be"):
        load(spec)
