"""synth-digits, the USPS and SVHN readers, and domain pairs (genmodels.adapt.domains)."""

import bz2
import os

import numpy as np
import pytest
import torch

from genmodels.adapt import domains
from genmodels.data import ImageDataset, Splits, load
from genmodels.data import synth_digits as sd
from genmodels.data.svhn import load_svhn
from genmodels.data.usps import load_usps

SMALL = "synth-digits:train=60,val=20,test=20"

# --- synth-digits ---------------------------------------------------------------------


def test_fonts_are_the_ones_with_the_ten_digits():
    names = {os.path.basename(p) for p in sd.digit_fonts()}
    assert {"DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "STIXGeneral.ttf", "cmr10.ttf"} <= names
    # Symbol fonts whose 0-9 code points hold other glyphs, and fonts without digits.
    assert not names & {"cmsy10.ttf", "cmex10.ttf", "STIXSizOneSymReg.ttf", "DejaVuSansDisplay.ttf"}


def test_synth_digits_splits_levels_and_labels():
    splits = load(SMALL)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [60, 20, 20]
    assert splits.train.images.shape == (60, 1, 8, 8) and splits.train.images.dtype == torch.uint8
    assert splits.levels == 17 and int(splits.train.images.max()) <= 16
    assert torch.equal(splits.train.labels.bincount(), torch.full((10,), 6))  # balanced
    assert splits.train.images.float().mean() > 2  # ink in every image
    assert (splits.train.images.flatten(1).sum(1) > 0).all()


def test_synth_digits_is_deterministic_and_each_split_has_its_own_stream():
    a = sd.render(30, seed=3, split=2)
    b = sd.render(30, seed=3, split=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(sd.render(30, seed=4, split=2)[0], a[0])
    # The test split does not depend on the training set's size.
    big = load("synth-digits:train=80,val=20,test=20")
    assert torch.equal(big.test.images, load(SMALL).test.images)


def test_block_counts_are_the_optdigits_reduction():
    bits = np.zeros((1, 32, 32), dtype=bool)
    bits[0, :4, :4] = True  # a full block
    bits[0, 4, 5] = True  # one pixel of block (1, 1)
    bits[0, 31, 31] = True
    counts = sd.block_counts(bits)
    assert counts.shape == (1, 8, 8)
    assert counts[0, 0, 0] == 16 and counts[0, 1, 1] == 1 and counts[0, 7, 7] == 1
    assert counts.sum() == bits.sum()


def test_bitmaps_fill_the_height_and_at_most_twenty_columns():
    renderer = sd._Renderer(sd.digit_fonts())
    rng = np.random.default_rng(0)
    for digit in range(10):
        bits = renderer.bitmap(rng, digit)
        rows, cols = np.flatnonzero(bits.any(1)), np.flatnonzero(bits.any(0))
        assert rows[-1] - rows[0] + 1 >= 30  # 95-100% of the 32 rows
        assert cols[-1] - cols[0] + 1 <= sd.MAX_WIDTH


def test_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENMODELS_CACHE", str(tmp_path))
    sd._load.cache_clear()
    first = sd.load_synth_digits((20, 10, 10), seed=5)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    sd._load.cache_clear()
    again = sd.load_synth_digits((20, 10, 10), seed=5)
    assert torch.equal(first.train.images, again.train.images)
    files[0].write_bytes(b"damaged")  # a damaged entry is rendered again
    sd._load.cache_clear()
    assert torch.equal(sd.load_synth_digits((20, 10, 10), seed=5).val.images, first.val.images)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("synth-digits:train=5", "at least 10"),
        ("synth-digits:size=5", "train=N,val=N,test=N,seed=S"),
        ("synth-digits:train=ten", "train=N"),
    ],
)
def test_synth_digits_bad_options(spec, words):
    with pytest.raises(ValueError, match=words):
        load(spec)


# --- USPS -----------------------------------------------------------------------------


def _usps_rows(n, seed):
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1, 1, size=(n, 256)).round(6)
    labels = rng.integers(1, 11, size=n)
    return values, labels


def _libsvm_text(values, labels, skip_zero=False):
    lines = []
    for v, y in zip(values, labels, strict=True):
        fields = [f"{i + 1}:{x:.6f}" for i, x in enumerate(v) if not (skip_zero and x == 0)]
        lines.append(f"{y} " + " ".join(fields))
    return ("\n".join(lines) + "\n").encode()


def _write_usps(folder, compressed, n_train=12, n_test=5):
    folder.mkdir(exist_ok=True)
    parts = {}
    for name, n, seed in (("usps", n_train, 0), ("usps.t", n_test, 1)):
        values, labels = _usps_rows(n, seed)
        text = _libsvm_text(values, labels)
        path = folder / (name + (".bz2" if compressed else ""))
        path.write_bytes(bz2.compress(text) if compressed else text)
        parts[name] = (values, labels)
    return parts


@pytest.mark.parametrize("compressed", [False, True])
def test_usps_libsvm(tmp_path, compressed):
    parts = _write_usps(tmp_path / "usps", compressed)
    splits = load(f"usps:{tmp_path / 'usps'}")
    assert splits.levels == 256 and splits.train.shape == (1, 16, 16)
    assert len(splits.train) + len(splits.val) == 12 and len(splits.test) == 5
    values, labels = parts["usps.t"]
    expected = np.rint((values + 1) * 127.5).astype(np.uint8).reshape(-1, 1, 16, 16)
    assert np.array_equal(splits.test.images.numpy(), expected)
    assert np.array_equal(splits.test.labels.numpy(), labels - 1)  # 1..10 -> 0..9
    # The training file's own path works too.
    name = "usps.bz2" if compressed else "usps"
    assert torch.equal(load(f"usps:{tmp_path / 'usps' / name}").test.images, splits.test.images)


def test_usps_libsvm_sparse_lines_mean_zero(tmp_path):
    values, labels = _usps_rows(3, 0)
    values[:, ::7] = 0.0
    folder = tmp_path / "u"
    folder.mkdir()
    (folder / "usps").write_bytes(_libsvm_text(values, labels, skip_zero=True))
    (folder / "usps.t").write_bytes(_libsvm_text(values, labels))
    splits = load_usps(str(folder))
    assert torch.equal(splits.test.images, torch.from_numpy(
        np.rint((values + 1) * 127.5).astype(np.uint8).reshape(-1, 1, 16, 16)))  # fmt: skip
    assert int(splits.test.images[0, 0, 0, 0]) == 128  # value 0 -> the middle level


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda t: t[: len(t) // 2], "truncated"),
        (lambda t: t.replace(b"1:", b"1;", 1), "LIBSVM format"),
        (lambda t: b"11" + t[t.index(b" ") :], "expected 1..10"),
        (lambda t: t.replace(b"2:", b"999:", 1), "indices must increase"),
        (lambda t: t.replace(b"1:", b"1:7", 1), r"\[-1, 1\]"),
        (lambda t: b"", "empty"),
        (lambda t: b"\xff\xfe" + t, "cannot be read"),
    ],
)
def test_usps_corrupt_libsvm_names_the_file(tmp_path, mutate, words):
    _write_usps(tmp_path / "u", compressed=False)
    path = tmp_path / "u" / "usps.t"
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(ValueError, match=words) as info:
        load(f"usps:{tmp_path / 'u'}")
    assert str(path) in str(info.value)


def test_usps_truncated_bz2(tmp_path):
    _write_usps(tmp_path / "u", compressed=True)
    path = tmp_path / "u" / "usps.bz2"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="cannot be read as a bz2-compressed") as info:
        load(f"usps:{tmp_path / 'u'}")
    assert str(path) in str(info.value)


def test_usps_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load(f"usps:{tmp_path / 'nothing'}")
    (tmp_path / "u").mkdir()
    with pytest.raises(FileNotFoundError, match=r"usps\[.bz2\] not found"):
        load(f"usps:{tmp_path / 'u'}")
    _write_usps(tmp_path / "v", compressed=False)
    os.unlink(tmp_path / "v" / "usps.t")
    with pytest.raises(FileNotFoundError, match=r"usps.t\[.bz2\] not found"):
        load(f"usps:{tmp_path / 'v'}")


def _write_h5(path, layout="float01", drop=None):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for part, n in (("train", 12), ("test", 4)):
            group = f.create_group(part)
            data = rng.uniform(0, 1, size=(n, 256))
            if layout == "int":
                data = (data * 255).astype(np.uint8)
            elif layout == "signed":
                data = data * 2 - 1
            if drop != (part, "data"):
                group["data"] = data
            if drop != (part, "target"):
                group["target"] = rng.integers(0, 10, size=n)


@pytest.mark.parametrize("layout", ["float01", "signed", "int"])
def test_usps_h5(tmp_path, layout):
    h5py = pytest.importorskip("h5py")
    _write_h5(tmp_path / "usps.h5", layout)
    splits = load(f"usps:{tmp_path / 'usps.h5'}")
    with h5py.File(tmp_path / "usps.h5", "r") as f:
        data, target = f["test"]["data"][()], f["test"]["target"][()]
    if layout == "float01":
        expected = np.rint(data * 255)
    elif layout == "signed":
        expected = np.rint((data + 1) / 2 * 255)
    else:
        expected = data
    assert np.array_equal(splits.test.images.numpy().reshape(4, 256), expected.astype(np.uint8))
    assert np.array_equal(splits.test.labels.numpy(), target)
    assert torch.equal(load(f"usps:{tmp_path}").test.images, splits.test.images)  # the folder


def test_usps_h5_bad_layouts_name_the_file(tmp_path):
    pytest.importorskip("h5py")
    _write_h5(tmp_path / "a.h5", drop=("test", "target"))
    with pytest.raises(ValueError, match="'test' is missing or incomplete") as info:
        load(f"usps:{tmp_path / 'a.h5'}")
    assert str(tmp_path / "a.h5") in str(info.value)
    (tmp_path / "b.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        load(f"usps:{tmp_path / 'b.h5'}")


def test_usps_h5_without_h5py_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    (tmp_path / "usps.h5").write_bytes(b"whatever")
    real_import = builtins.__import__

    def no_h5py(name, *args, **kwargs):
        if name == "h5py":
            raise ImportError("No module named 'h5py'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_h5py)
    with pytest.raises(ImportError, match="pip install h5py"):
        load(f"usps:{tmp_path / 'usps.h5'}")


# --- SVHN -----------------------------------------------------------------------------


def _write_svhn(folder, n_train=15, n_test=6):
    from scipy.io import savemat

    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
        savemat(folder / f"{part}_32x32.mat", {"X": x, "y": y})
        arrays[part] = (x, y)
    return arrays


def test_svhn(tmp_path):
    arrays = _write_svhn(tmp_path / "svhn")
    splits = load(f"svhn:{tmp_path / 'svhn'}")
    x, y = arrays["test"]
    assert splits.test.images.shape == (6, 3, 32, 32) and splits.levels == 256
    assert np.array_equal(splits.test.images.numpy(), x.transpose(3, 2, 0, 1))
    assert np.array_equal(splits.test.labels.numpy(), y.reshape(-1) % 10)  # 10 -> 0
    assert len(splits.train) + len(splits.val) == 15


@pytest.mark.parametrize(
    "damage, error, words",
    [
        ("missing", FileNotFoundError, "test_32x32.mat not found"),
        ("truncated", ValueError, "not a readable MATLAB file"),
        ("garbage", ValueError, "not a readable MATLAB file"),
        ("wrong shape", ValueError, r"expected X \[32, 32, 3, N\]"),
        ("bad labels", ValueError, "labels 1..10"),
    ],
)
def test_svhn_damaged_files_name_the_path(tmp_path, damage, error, words):
    from scipy.io import savemat

    _write_svhn(tmp_path / "s")
    path = tmp_path / "s" / "test_32x32.mat"
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "garbage":
        path.write_bytes(os.urandom(2000))
    elif damage == "wrong shape":
        savemat(path, {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    else:
        savemat(path, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [11]])})
    with pytest.raises(error, match=words) as info:
        load(f"svhn:{tmp_path / 's'}")
    assert str(path) in str(info.value)


def test_svhn_not_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_svhn(str(tmp_path / "none"))


# --- domain pairs -----------------------------------------------------------------------


def _splits(images, labels, levels, name):
    data = ImageDataset(images, labels, levels, name)
    return Splits(data, data, data)


def test_pair_resizes_both_with_antialiased_bilinear_and_requantises():
    a = _splits(torch.randint(0, 17, (10, 1, 8, 8), dtype=torch.uint8),
                torch.arange(10), 17, "a")  # fmt: skip
    b = _splits(torch.randint(0, 256, (10, 1, 16, 16), dtype=torch.uint8),
                torch.arange(10), 256, "b")  # fmt: skip
    with pytest.raises(ValueError, match="--image-size"):
        domains.make_pair(a, b)
    s, t = domains.make_pair(a, b, image_size=12)
    assert s.train.shape == t.train.shape == (1, 12, 12)
    assert s.levels == t.levels == 256  # 17 levels mapped onto 256
    expected = torch.nn.functional.interpolate(
        b.train.images.float(), size=(12, 12), mode="bilinear", antialias=True
    ).round()
    assert torch.equal(t.train.images.float(), expected)
    up = torch.nn.functional.interpolate(
        a.train.images.float(), size=(12, 12), mode="bilinear", antialias=True
    ).round()
    assert torch.equal(s.train.images.float(), (up * (255 / 16)).round())


def test_pair_checks_channels_and_classes():
    rgb = _splits(
        torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8), torch.arange(10), 256, "rgb"
    )
    gray = _splits(
        torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8), torch.arange(10), 256, "g"
    )
    with pytest.raises(ValueError, match="--grayscale"):
        domains.make_pair(rgb, gray)
    s, _ = domains.make_pair(rgb, gray, grayscale=True)
    luma = (rgb.train.images.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    assert torch.equal(s.train.images[:, 0].float(), luma.round())
    five = _splits(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), torch.arange(10) % 5, 256, "five")
    with pytest.raises(ValueError, match="same classes"):
        domains.make_pair(gray, five)


def test_pair_subsets_are_fixed():
    a = _splits(
        torch.randint(0, 17, (50, 1, 8, 8), dtype=torch.uint8), torch.arange(50) % 10, 17, "a"
    )
    s1, _ = domains.make_pair(a, a, source_size=20)
    s2, _ = domains.make_pair(a, a, source_size=20)
    assert len(s1.train) == 20 and torch.equal(s1.train.images, s2.train.images)
    with pytest.raises(ValueError, match="--target-size 60"):
        domains.make_pair(a, a, target_size=60)
