"""Readers: IDX (plain and gzip), .npz/.npy arrays, image folders and resizing."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FASHION_DIR, needs_fashion
from vaekit.data.formats import (
    find_idx_split,
    idx_header,
    read_array_file,
    read_idx,
    read_idx_folder,
    read_idx_pair,
    read_image_folder,
    resize_images,
    to_uint8_nchw,
)
from vaekit.errors import DataError

# An independent IDX writer: type code and big-endian dtype per numpy dtype.
_CODES = {
    "uint8": (0x08, ">u1"),
    "int8": (0x09, ">i1"),
    "int16": (0x0B, ">i2"),
    "int32": (0x0C, ">i4"),
    "float32": (0x0D, ">f4"),
    "float64": (0x0E, ">f8"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    code, big = _CODES[array.dtype.name]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(big).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool | None = None) -> Path:
    data = idx_bytes(array)
    if gz if gz is not None else path.name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("dtype", list(_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_every_type(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    array = (rng.normal(size=(3, 5, 4)) * 50).astype(dtype)
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), array)
    out = read_idx(path)
    assert out.shape == (3, 5, 4)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable


def test_gzip_is_detected_by_magic_not_extension(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    gz_no_ext = write_idx(tmp_path / "images-idx3-ubyte", array, gz=True)
    plain_gz_ext = write_idx(tmp_path / "images-idx3-ubyte.gz", array, gz=False)
    np.testing.assert_array_equal(read_idx(gz_no_ext), array)
    np.testing.assert_array_equal(read_idx(plain_gz_ext), array)


def test_idx_header_reads_dims_without_the_data(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((7, 3, 2), dtype=np.int16))
    dtype, dims = idx_header(path)
    assert dims == (7, 3, 2)
    assert dtype.kind == "i" and dtype.itemsize == 2


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_names_the_file_and_sizes(tmp_path, gz):
    data = idx_bytes(np.zeros((10, 4, 4), dtype=np.uint8))[:-7]
    path = tmp_path / "short-images-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match=r"truncated") as err:
        read_idx(path)
    assert "short-images-idx3-ubyte" in str(err.value)
    assert "160 bytes" in str(err.value) and "153" in str(err.value)


def test_idx_with_trailing_bytes_is_an_error(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(np.zeros((2, 2), dtype=np.uint8)) + b"junk")
    with pytest.raises(DataError, match=r"long.idx: 4 extra bytes"):
        read_idx(path)


@pytest.mark.parametrize(
    "head", [b"\x00\x01\x08\x01", b"\x00\x00\x07\x01", b"PK\x03\x04", b"\x00\x00\x08\x00", b""]
)
def test_bad_magic_is_not_an_idx_file(tmp_path, head):
    path = tmp_path / "bad.idx"
    path.write_bytes(head + b"\x00\x00\x00\x01" + b"\x00")
    with pytest.raises(DataError, match=r"bad.idx: not an IDX file \(magic"):
        read_idx(path)


def test_corrupt_gzip_stream_is_a_data_error(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32).reshape(10, 100)))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut.gz: corrupt gzip stream"):
        read_idx(cut)
    flipped = bytearray(good)
    flipped[-6] ^= 0xFF  # the CRC32 trailer
    bad_crc = tmp_path / "crc.gz"
    bad_crc.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match=r"crc.gz: corrupt gzip stream"):
        read_idx(bad_crc)


def test_missing_idx_file(tmp_path):
    with pytest.raises(DataError, match=r"nothing.gz: no such file"):
        read_idx(tmp_path / "nothing.gz")


def test_idx_pair_shapes_and_dtypes(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 250], dtype=np.uint8)
    x, y = read_idx_pair(write_idx(tmp_path / "i.gz", images), write_idx(tmp_path / "l", labels))
    assert x.shape == (6, 1, 5, 4) and x.dtype == np.uint8 and x.flags.c_contiguous
    assert y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], images)
    np.testing.assert_array_equal(y, labels.astype(np.int64))


def test_idx_pair_transpose_swaps_height_and_width(tmp_path):
    images = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    ip = write_idx(tmp_path / "emnist-balanced-train-images-idx3-ubyte", images)
    lp = write_idx(tmp_path / "emnist-balanced-train-labels-idx1-ubyte", np.zeros(2, np.uint8))
    x, _ = read_idx_pair(ip, lp, transpose=True)
    assert x.shape == (2, 1, 5, 3) and x.flags.c_contiguous
    np.testing.assert_array_equal(x[1, 0], images[1].T)
    # An IDX folder recognises EMNIST by name and transposes on its own.
    folder_x, _ = read_idx_folder(tmp_path, "train")
    np.testing.assert_array_equal(folder_x, x)


def test_idx_pair_count_mismatch_names_both_files(tmp_path):
    ip = write_idx(tmp_path / "imgs", np.zeros((5, 2, 2), np.uint8))
    lp = write_idx(tmp_path / "labs", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match=r"imgs holds 5 images but .*labs holds 4 labels"):
        read_idx_pair(ip, lp)


def test_idx_pair_rejects_wrong_ndim_and_dtype(tmp_path):
    lp = write_idx(tmp_path / "labs", np.zeros(2, np.uint8))
    flat = write_idx(tmp_path / "flat", np.zeros((2, 4), np.uint8))
    with pytest.raises(
        DataError, match=r"flat: expected uint8 images \[N, H, W\], got uint8 \[2, 4\]"
    ):
        read_idx_pair(flat, lp)
    floats = write_idx(tmp_path / "floats", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(DataError, match=r"floats: expected uint8 images"):
        read_idx_pair(floats, lp)
    labels_2d = write_idx(tmp_path / "labs2d", np.zeros((2, 1), np.uint8))
    with pytest.raises(DataError, match=r"labs2d: expected integer labels"):
        read_idx_pair(write_idx(tmp_path / "ok", np.zeros((2, 2, 2), np.uint8)), labels_2d)


@needs_fashion
def test_real_fashion_mnist():
    x, y = read_idx_pair(
        FASHION_DIR / "train-images-idx3-ubyte.gz", FASHION_DIR / "train-labels-idx1-ubyte.gz"
    )
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.uint8
    assert np.array_equal(np.bincount(y), np.full(10, 6000))
    assert x.max() == 255 and x.min() == 0
    xt, yt = read_idx_folder(FASHION_DIR, "test")
    assert xt.shape == (10000, 1, 28, 28) and set(np.unique(yt)) == set(range(10))


def test_find_idx_split_names(tmp_path):
    kmnist = tmp_path / "kmnist"
    kmnist.mkdir()
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "README.md",
    ):
        (kmnist / name).write_bytes(b"")
    assert find_idx_split(kmnist, "train") == (
        kmnist / "train-images-idx3-ubyte.gz",
        kmnist / "train-labels-idx1-ubyte.gz",
    )
    assert find_idx_split(kmnist, "test")[0].name == "t10k-images-idx3-ubyte.gz"

    emnist = tmp_path / "emnist"
    emnist.mkdir()
    for name in ("emnist-letters-test-images-idx3-ubyte", "emnist-letters-test-labels-idx1-ubyte"):
        (emnist / name).write_bytes(b"")
    assert find_idx_split(emnist, "train") is None
    assert find_idx_split(emnist, "test")[1].name == "emnist-letters-test-labels-idx1-ubyte"


def test_find_idx_split_prefers_decompressed_copy_and_rejects_mixtures(tmp_path):
    for name in (
        "train-images-idx3-ubyte.gz",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte.gz",
    ):
        (tmp_path / name).write_bytes(b"")
    assert find_idx_split(tmp_path, "train")[0].name == "train-images-idx3-ubyte"
    (tmp_path / "emnist-digits-train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"several images files"):
        find_idx_split(tmp_path, "train")


def test_find_idx_split_without_labels(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"found train images .* but no train labels file"):
        find_idx_split(tmp_path, "train")


def test_to_uint8_nchw_layouts():
    rng = np.random.default_rng(0)
    nhw = rng.integers(0, 256, (4, 6, 5), dtype=np.uint8)
    assert to_uint8_nchw(nhw, source="s").shape == (4, 1, 6, 5)
    nhwc = rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    out = to_uint8_nchw(nhwc, source="s")
    assert out.shape == (4, 3, 6, 5) and out.flags.c_contiguous
    np.testing.assert_array_equal(out[2, 1], nhwc[2, :, :, 1])
    rgba = rng.integers(0, 256, (2, 6, 5, 4), dtype=np.uint8)
    np.testing.assert_array_equal(
        to_uint8_nchw(rgba, source="s"), rgba[..., :3].transpose(0, 3, 1, 2)
    )
    nchw = rng.integers(0, 256, (2, 3, 6, 5), dtype=np.uint8)
    np.testing.assert_array_equal(to_uint8_nchw(nchw, source="s"), nchw)
    assert to_uint8_nchw(np.zeros((2, 28, 28, 1), np.uint8), source="s").shape == (2, 1, 28, 28)


def test_to_uint8_nchw_values():
    floats = np.array([0.0, 0.5, 1.0, 0.1, 1 / 255]).reshape(1, 1, 5)
    np.testing.assert_array_equal(to_uint8_nchw(floats, source="s").ravel(), [0, 128, 255, 26, 1])
    bools = np.array([True, False]).reshape(1, 1, 2)
    np.testing.assert_array_equal(to_uint8_nchw(bools, source="s").ravel(), [255, 0])


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.linspace(0, 2, 18).reshape(2, 3, 3),
            r"my.npz: float images must lie in \[0, 1\].*\[0, 2\]",
        ),
        (np.full((2, 3, 3), np.nan, np.float32), "my.npz: float images must lie in"),
        (np.full((2, 3, 3), 7, np.int64), r"my.npz: images must be uint8.*int64 \[2, 3, 3\]"),
        (np.zeros((2, 5, 6, 7), np.uint8), "my.npz: cannot tell the channel axis"),
        (np.zeros((2, 3), np.uint8), r"my.npz: expected images shaped .* got \[2, 3\]"),
        (np.zeros((0, 3, 3), np.uint8), "my.npz: holds no images"),
    ],
)
def test_to_uint8_nchw_errors_name_source_and_shape(array, message):
    with pytest.raises(DataError, match=message):
        to_uint8_nchw(array, source="my.npz")


def test_read_array_file_npy_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((5, 8, 8, 1)).astype(np.float32)
    np.save(tmp_path / "a.npy", images)
    x, y = read_array_file(tmp_path / "a.npy")
    assert x.shape == (5, 1, 8, 8) and x.dtype == np.uint8 and y is None
    np.testing.assert_array_equal(x[:, 0], np.rint(images[..., 0] * 255))

    np.savez(tmp_path / "b.npz", x=images, targets=np.arange(5, dtype=np.int32))
    x, y = read_array_file(tmp_path / "b.npz")
    assert x.shape == (5, 1, 8, 8) and y.dtype == np.int64 and y.tolist() == [0, 1, 2, 3, 4]

    np.savez(tmp_path / "single.npz", whatever=np.zeros((3, 4, 4), np.uint8))
    assert read_array_file(tmp_path / "single.npz")[0].shape == (3, 1, 4, 4)


def test_read_array_file_errors(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 4, 4)), b=np.zeros(3))
    with pytest.raises(DataError, match=r"two.npz: no image array.*\['a', 'b'\]"):
        read_array_file(tmp_path / "two.npz")
    np.savez(tmp_path / "count.npz", images=np.zeros((3, 4, 4), np.uint8), labels=np.zeros(2, int))
    with pytest.raises(DataError, match=r"count.npz: 3 images but 2 labels under 'labels'"):
        read_array_file(tmp_path / "count.npz")
    np.savez(tmp_path / "flt.npz", images=np.zeros((3, 4, 4), np.uint8), y=np.zeros(3))
    with pytest.raises(DataError, match=r"flt.npz: labels 'y' must be integers"):
        read_array_file(tmp_path / "flt.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk.npz: not a readable .npz file"):
        read_array_file(tmp_path / "junk.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj.npy: not a readable .npy file"):
        read_array_file(tmp_path / "obj.npy")
    with pytest.raises(DataError, match=r"gone.npy: no such file"):
        read_array_file(tmp_path / "gone.npy")


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_read_image_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    _save(tmp_path / "dogs" / "b.png", rng.integers(0, 256, (10, 12), dtype=np.uint8))
    _save(tmp_path / "dogs" / "deep" / "a.JPG", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    _save(tmp_path / "cats" / "z.jpeg", rng.integers(0, 256, (9, 7), dtype=np.uint8))
    rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    _save(tmp_path / "cats" / "y.png", rgba)
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / "cats" / ".hidden.png").write_bytes(b"macOS resource fork")
    images, labels, classes = read_image_folder(tmp_path)
    assert classes == ["cats", "dogs"]
    # sorted paths: cats/y.png, cats/z.jpeg, dogs/b.png, dogs/deep/a.JPG
    assert labels.tolist() == [0, 0, 1, 1]
    assert [im.shape for im in images] == [(3, 5, 6), (1, 9, 7), (1, 10, 12), (3, 8, 8)]
    np.testing.assert_array_equal(images[0], rgba[..., :3].transpose(2, 0, 1))
    assert all(im.dtype == np.uint8 for im in images)


def test_read_image_folder_flat_has_no_labels_and_errors(tmp_path):
    _save(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    images, labels, classes = read_image_folder(tmp_path)
    assert len(images) == 1 and labels is None and classes == []
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"broken.png: cannot read image"):
        read_image_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: no .png, .jpg or .jpeg images"):
        read_image_folder(empty)


def test_sixteen_bit_png_keeps_the_top_byte(tmp_path):
    wide = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4096 + 255).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "w.png")
    (image,), _, _ = read_image_folder(tmp_path)
    np.testing.assert_array_equal(image[0], (wide >> 8).astype(np.uint8))


def test_resize_images_size_and_channels():
    grey = np.full((1, 10, 20), 100, np.uint8)
    rgb = np.zeros((3, 6, 6), np.uint8)
    rgb[0] = 255  # pure red: luma 0.299 * 255 = 76
    out = resize_images([grey, rgb], size=8)
    assert out.shape == (2, 3, 8, 8) and out.dtype == np.uint8
    assert (out[0] == 100).all()  # grey -> RGB copies the channel
    out = resize_images([grey, rgb], size=8, channels=1)
    assert out.shape == (2, 1, 8, 8)
    assert (out[1] == 76).all()
    assert resize_images([grey, grey], size=4).shape == (2, 1, 4, 4)


def test_resize_down_is_an_area_mean():
    checker = np.kron(np.eye(2, dtype=np.uint8) * 200, np.ones((4, 4), np.uint8))
    image = np.tile(checker, (2, 2))[None]  # 16x16: 4x4 blocks of 0 and 200
    down = resize_images([image], size=4)[0, 0]
    np.testing.assert_array_equal(down, np.tile(np.eye(2) * 200, (2, 2)))
    fine = np.tile(np.array([[0, 200], [200, 0]], np.uint8), (8, 8))[None]
    assert (resize_images([fine], size=8)[0, 0] == 100).all()  # no aliasing, mass kept


def test_resize_native_size_must_agree():
    a, b = np.zeros((1, 4, 4), np.uint8), np.zeros((1, 5, 4), np.uint8)
    with pytest.raises(
        DataError, match=r"pics: images differ in size \(4x4, 5x4\); set data.image_size"
    ):
        resize_images([a, b], source="pics")
    batch = np.zeros((3, 1, 7, 7), np.uint8)
    assert resize_images(batch).shape == (3, 1, 7, 7)
    assert resize_images(batch, channels=3).shape == (3, 3, 7, 7)
