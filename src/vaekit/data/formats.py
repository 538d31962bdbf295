"""Readers for image files: IDX (MNIST family, plain or gzip), .npz/.npy arrays and image folders.

Every reader returns images as uint8 ``[N, C, H, W]`` (or a list of uint8 ``[C, H, W]`` arrays
for a folder of images of different sizes) and labels as int64 ``[N]``. Every problem a user can
cause (a missing, truncated or foreign file) raises ``DataError`` naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image

from vaekit.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_KEYS = ("images", "x", "X", "data")
LABEL_KEYS = ("labels", "y", "Y", "targets")

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); data is big-endian.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

GZIP_ERRORS = (OSError, EOFError, zlib.error)


def is_gzip(path: str | Path) -> bool:
    """Whether a file starts with the gzip magic bytes (the extension is not trusted)."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None


def open_decompressed(path: str | Path) -> BinaryIO:
    """Open a file for binary reading, transparently decompressing it when it is gzip."""
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def decompressed_bytes(path: str | Path) -> bytes:
    """The whole content of a file, gunzipped when it is gzip; DataError if missing or corrupt."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except GZIP_ERRORS as err:
        raise DataError(f"{path}: corrupt gzip stream ({err})") from None


def _parse_idx_header(data: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Dtype, dims and header length of IDX bytes; DataError for a bad magic number."""
    code = data[2] if len(data) >= 4 else None
    if len(data) < 4 or data[:2] != b"\0\0" or code not in IDX_DTYPES or data[3] == 0:
        raise DataError(f"{path}: not an IDX file (magic {data[:4].hex(' ') or 'empty'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{path}: truncated: header promises {ndim} dimensions, "
            f"file ends after {len(data)} bytes"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header])
    return IDX_DTYPES[code], dims, header


def idx_header(path: str | Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Dtype and dims of an IDX file from its header alone (cheap: no full decompression)."""
    path = Path(path)
    try:
        with open_decompressed(path) as f:
            head = f.read(4)
            if len(head) == 4:
                head += f.read(4 * head[3])
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except GZIP_ERRORS as err:
        raise DataError(f"{path}: corrupt gzip stream ({err})") from None
    dtype, dims, _ = _parse_idx_header(head, path)
    return dtype, dims


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian, writable array of its dims."""
    path = Path(path)
    data = decompressed_bytes(path)
    dtype, dims, header = _parse_idx_header(data, path)
    expected = math.prod(dims) * dtype.itemsize
    actual = len(data) - header
    if actual < expected:
        raise DataError(
            f"{path}: truncated: header promises {expected} bytes of data, file has {actual}"
        )
    if actual > expected:
        raise DataError(
            f"{path}: {actual - expected} extra bytes: header promises {expected} bytes of data "
            f"(dims {list(dims)}), file has {actual}"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header)
    return array.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def read_idx_pair(
    images_path: str | Path, labels_path: str | Path, *, transpose: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read IDX images as uint8 [N, 1, H, W] and labels as int64 [N]; transpose swaps H and W."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected uint8 images [N, H, W], "
            f"got {images.dtype} {list(images.shape)}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{labels_path}: expected integer labels [N], got {labels.dtype} {list(labels.shape)}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if transpose:
        images = images.transpose(0, 2, 1)
    return np.ascontiguousarray(images[:, None]), labels.astype(np.int64)


_IDX_SPLIT_KEYS = {"train": ("train",), "test": ("t10k", "test")}


def _idx_candidates(folder: Path, keys: tuple[str, ...], kind: str) -> list[Path]:
    """Files in ``folder`` named like ``<...>train-images-idx3-ubyte[.gz]`` for the given keys."""
    number = "3" if kind == "images" else "1"
    pattern = re.compile(
        rf"(^|.*[-_.])({'|'.join(keys)})[-_.]{kind}[-_.]idx{number}[-_.]ubyte(\.gz)?$",
        re.IGNORECASE,
    )
    found = [p for p in folder.iterdir() if p.is_file() and pattern.match(p.name)]
    by_stem: dict[str, list[Path]] = {}
    for p in found:
        by_stem.setdefault(p.name.lower().removesuffix(".gz"), []).append(p)
    if len(by_stem) > 1:
        names = ", ".join(sorted(p.name for p in found))
        raise DataError(
            f"{folder}: several {kind} files for one split ({names}); "
            "point data.path at a folder holding one dataset"
        )
    # A folder holding both x.gz and x: read the decompressed copy (faster).
    return sorted(found, key=lambda p: p.suffix.lower() == ".gz")


def find_idx_split(folder: str | Path, split: Literal["train", "test"]) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files of a split in an MNIST-family folder, or None if absent."""
    folder = Path(folder)
    keys = _IDX_SPLIT_KEYS[split]
    images = _idx_candidates(folder, keys, "images")
    labels = _idx_candidates(folder, keys, "labels")
    if not images and not labels:
        return None
    if not images or not labels:
        have, missing = ("images", "labels") if images else ("labels", "images")
        name = (images or labels)[0].name
        raise DataError(f"{folder}: found {split} {have} ({name}) but no {split} {missing} file")
    return images[0], labels[0]


def read_idx_folder(
    folder: str | Path, split: Literal["train", "test"]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Read a split of an IDX folder (EMNIST files, named ``emnist-*``, are transposed back)."""
    found = find_idx_split(folder, split)
    if found is None:
        return None
    images_path, labels_path = found
    transpose = "emnist" in images_path.name.lower()
    return read_idx_pair(images_path, labels_path, transpose=transpose)


def to_uint8_nchw(array: np.ndarray, *, source: str) -> np.ndarray:
    """Bring [N,H,W], [N,H,W,C] or [N,C,H,W] images of uint8, bool or [0,1] floats to uint8 NCHW."""
    array = np.asarray(array)
    shape = list(array.shape)
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        if shape[3] in (1, 3, 4) and shape[1] not in (1, 3):
            array = array[..., :3].transpose(0, 3, 1, 2)  # NHWC; RGBA loses its alpha
        elif shape[1] not in (1, 3):
            raise DataError(
                f"{source}: cannot tell the channel axis of images shaped {shape}; "
                "expected [N, H, W], [N, H, W, C] (C = 1, 3, 4) or [N, C, H, W] (C = 1, 3)"
            )
    else:
        raise DataError(
            f"{source}: expected images shaped [N, H, W], [N, H, W, C] or [N, C, H, W], got {shape}"
        )
    if array.shape[0] == 0 or 0 in array.shape[2:]:
        raise DataError(f"{source}: holds no images (shape {shape})")
    if array.dtype == np.uint8:
        out = array
    elif array.dtype == np.bool_:
        out = array.astype(np.uint8) * np.uint8(255)
    elif np.issubdtype(array.dtype, np.floating):
        low, high = float(np.min(array)), float(np.max(array))
        if not (low >= 0.0 and high <= 1.0):  # also catches NaN
            raise DataError(
                f"{source}: float images must lie in [0, 1], got {array.dtype} {shape} "
                f"in [{low:g}, {high:g}]"
            )
        out = np.rint(array * 255.0).astype(np.uint8)
    else:
        if array.dtype.kind in "iu":
            hint = f" in [{array.min()}, {array.max()}]; convert to uint8 (0-255) yourself"
        else:
            hint = ""
        raise DataError(
            f"{source}: images must be uint8, bool or floats in [0, 1], "
            f"got {array.dtype} {shape}{hint}"
        )
    return np.ascontiguousarray(out)


def _labels_from(archive: np.lib.npyio.NpzFile, path: Path, count: int) -> np.ndarray | None:
    """The label array of an .npz archive (first of LABEL_KEYS), checked against the image count."""
    key = next((k for k in LABEL_KEYS if k in archive.files), None)
    if key is None:
        return None
    labels = archive[key]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: labels {key!r} must be integers shaped [N], "
            f"got {labels.dtype} {list(labels.shape)}"
        )
    if len(labels) != count:
        raise DataError(f"{path}: {count} images but {len(labels)} labels under {key!r}")
    return labels.astype(np.int64)


def read_array_file(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read images (uint8 NCHW) and optional int64 labels from a .npy or .npz file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: expected a .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable {suffix} file ({err})") from None
    if isinstance(loaded, np.ndarray):
        return to_uint8_nchw(loaded, source=str(path)), None
    with loaded as archive:
        try:
            key = next((k for k in IMAGE_KEYS if k in archive.files), None)
            if key is None and len(archive.files) == 1 and archive.files[0] not in LABEL_KEYS:
                key = archive.files[0]
            if key is None:
                raise DataError(
                    f"{path}: no image array; expected one of the keys {list(IMAGE_KEYS)} "
                    f"or a single array, found {archive.files}"
                )
            images = to_uint8_nchw(archive[key], source=f"{path}[{key!r}]")
            return images, _labels_from(archive, path, len(images))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise DataError(f"{path}: not a readable .npz file ({err})") from None


def _decode_image(path: Path) -> np.ndarray:
    """Decode one PNG/JPEG into uint8 [1, H, W] (grey) or [3, H, W] (colour; alpha dropped)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                wide = np.asarray(img).astype(np.int64)  # 16-bit grey: keep the top 8 bits
                return np.clip(wide >> 8, 0, 255).astype(np.uint8)[None]
            grey = img.mode in ("1", "L", "LA", "F") or (
                img.mode == "P" and img.palette is not None and img.palette.mode in ("L", "LA")
            )
            converted = img.convert("L" if grey else "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read image ({err})") from None
    array = np.asarray(converted, dtype=np.uint8)
    return array[None] if grey else array.transpose(2, 0, 1)


def _image_files(folder: Path) -> list[Path]:
    """PNG/JPEG files under ``folder`` (recursive, hidden names skipped), in sorted order."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                found.append(Path(root, name))
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def read_image_folder(path: str | Path) -> tuple[list[np.ndarray], np.ndarray | None, list[str]]:
    """Decode every image under a folder into uint8 [C, H, W] arrays; subfolders name classes.

    Labels are the index of each image's first-level subfolder among the sorted subfolder names
    when every image lives in a subfolder; otherwise labels are None and the class list is empty.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    files = _image_files(folder)
    if not files:
        raise DataError(f"{folder}: no .png, .jpg or .jpeg images in this folder or below it")
    images = [_decode_image(p) for p in files]
    parts = [p.relative_to(folder).parts for p in files]
    if any(len(rel) == 1 for rel in parts):
        return images, None, []
    class_names = sorted({rel[0] for rel in parts})
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([index[rel[0]] for rel in parts], dtype=np.int64)
    return images, labels, class_names


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of uint8 [..., 3, H, W] colour images, as PIL's convert('L') computes it."""
    weights = np.array([299, 587, 114], dtype=np.uint32).reshape(3, 1, 1)
    total = (rgb.astype(np.uint32) * weights).sum(axis=-3) + 500
    return (total // 1000).astype(np.uint8)


def _convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert uint8 [C, H, W] or [N, C, H, W] images to 1 (grey) or 3 (RGB) channels."""
    have = image.shape[-3]
    if have == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=-3)
    return np.expand_dims(_luma(image), -3)


def resize_images(
    images: np.ndarray | Sequence[np.ndarray],
    *,
    size: int | None = None,
    channels: int | None = None,
    source: str = "images",
) -> np.ndarray:
    """Make one uint8 [N, C, size, size] array from uint8 [C, H, W] images of any size and mode.

    ``channels`` None keeps grey if every image is grey, else RGB; ``size`` None keeps the native
    size, which must then be the same for all images. Shrinking uses PIL's BOX filter (each
    output pixel is the area mean of the input pixels it covers: no aliasing, ink mass kept, no
    extra blur); enlarging uses bilinear (BOX would degenerate to blocky nearest-neighbour).
    Non-square images are stretched to a square.
    """
    if len(images) == 0:
        raise DataError(f"{source}: holds no images")
    if channels is None:
        channels = 1 if all(im.shape[-3] == 1 for im in images) else 3
    if channels not in (1, 3):
        raise DataError(f"{source}: channels must be 1 or 3, got {channels}")
    if size is None:
        sizes = sorted({tuple(im.shape[-2:]) for im in images})
        if len(sizes) > 1:
            shown = ", ".join(f"{h}x{w}" for h, w in sizes[:4]) + (
                ", ..." if len(sizes) > 4 else ""
            )
            raise DataError(
                f"{source}: images differ in size ({shown}); set data.image_size to resize them"
            )
    if isinstance(images, np.ndarray) and (size is None or images.shape[-2:] == (size, size)):
        return np.ascontiguousarray(_convert_channels(images, channels))
    if size is None:
        return np.stack([_convert_channels(im, channels) for im in images])
    out = np.empty((len(images), channels, size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = _convert_channels(_resize_one(image, size), channels)
    return out


def _resize_one(image: np.ndarray, size: int) -> np.ndarray:
    """Resize one uint8 [C, H, W] image to [C, size, size] with PIL (BOX down, bilinear up)."""
    height, width = image.shape[-2:]
    if (height, width) == (size, size):
        return image
    shrink = size <= height and size <= width
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    pil = (
        Image.fromarray(image[0])
        if image.shape[0] == 1
        else Image.fromarray(image.transpose(1, 2, 0))
    )
    array = np.asarray(pil.resize((size, size), resample=resample))
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
