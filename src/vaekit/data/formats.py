"""Readers for image files: IDX (MNIST family, plain or gzip), .npz/.npy arrays and image folders.

Every reader returns images as uint8 ``[N, C, H, W]`` (or a list of uint8 ``[C, H, W]`` arrays
for a folder of images of different sizes) and labels as int64 ``[N]``. Every problem a user can
cause (a missing, truncated, empty or foreign file) raises ``DataError`` naming the file; no
other exception escapes a reader, whatever the bytes.

Files are untrusted input:

- nothing is unpickled: ``.npy``/``.npz`` files load with ``allow_pickle=False`` and object
  arrays are refused by their header;
- a header (IDX dims, an ``.npy`` shape) is checked against the data actually present before
  anything is allocated, so a 16-byte file claiming 100000 x 100000 images is refused at once;
- image files reach PIL's PNG and JPEG decoders only, with PIL's decompression-bomb limit.

Image folders: every ``.png``/``.jpg``/``.jpeg`` file below the folder is an image (hidden
names skipped); other files (``notes.txt``, ``Thumbs.db``) are ignored. Modes are converted
(grey stays grey, anything else becomes RGB, alpha is dropped, 16-bit grey keeps its top byte),
and with several modes in one folder ``resize_images`` makes them all RGB unless
``data.channels = 1``. Images of different sizes are refused unless ``data.image_size`` is set,
which resizes every image to that square.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from vaekit.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DECODERS = ("PNG", "JPEG")  # the only PIL decoders an image folder's files ever reach
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
CHUNK = 1 << 20


def _physical_memory() -> int | None:
    """Bytes of RAM on this machine, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _beyond_memory(nbytes: int) -> str | None:
    """Why ``nbytes`` promised by a header cannot be loaded (more than the RAM), or None."""
    memory = _physical_memory()
    if memory is not None and nbytes > memory:
        return (
            f"header promises {nbytes} bytes of data ({nbytes / 2**30:.1f} GiB), "
            f"more than this machine's {memory / 2**30:.1f} GiB of memory"
        )
    return None


def _read_failure(path: Path, err: BaseException, gz: bool) -> DataError:
    """The DataError for an exception met while reading a (possibly gzip) file."""
    if isinstance(err, FileNotFoundError):
        return DataError(f"{path}: no such file")
    local = isinstance(err, PermissionError | IsADirectoryError)
    if isinstance(err, OSError) and (not gz or local):
        return DataError(f"{path}: cannot read ({err.strerror or err})")
    return DataError(f"{path}: corrupt gzip stream ({err})")


def is_gzip(path: str | Path) -> bool:
    """Whether a file starts with the gzip magic bytes (the extension is not trusted)."""
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError as err:
        raise _read_failure(Path(path), err, gz=False) from None


def open_decompressed(path: str | Path) -> BinaryIO:
    """Open a file for binary reading, transparently decompressing it when it is gzip."""
    if is_gzip(path):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _read_up_to(f: BinaryIO, limit: int) -> bytearray:
    """At most ``limit`` bytes from ``f``, read in chunks so that memory follows the content.

    A header's promise is not trusted: a 16-byte file claiming 100000 x 100000 images costs
    16 bytes of memory here, not 10 GB.
    """
    out = bytearray()
    while len(out) < limit:
        chunk = f.read(min(CHUNK, limit - len(out)))
        if not chunk:
            break
        out += chunk
    return out


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
    dtype = IDX_DTYPES[code]
    if math.prod(d for d in dims if d) * dtype.itemsize > np.iinfo(np.intp).max:
        raise DataError(f"{path}: dims {list(dims)} describe an impossibly large array")
    return dtype, dims, header


def _read_idx_head(f: BinaryIO) -> bytes:
    """The magic number and the dimension sizes it announces (short if the file is)."""
    head = f.read(4)
    if len(head) == 4:
        head += f.read(4 * head[3])
    return head


def idx_header(path: str | Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Dtype and dims of an IDX file from its header alone (cheap: no full decompression)."""
    path = Path(path)
    gz = is_gzip(path)
    try:
        with open_decompressed(path) as f:
            head = _read_idx_head(f)
    except GZIP_ERRORS as err:
        raise _read_failure(path, err, gz) from None
    dtype, dims, _ = _parse_idx_header(head, path)
    return dtype, dims


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or gzip) into a native-endian, writable array of its dims.

    The header is checked against the data before anything large is allocated, and a gzip
    stream is read to its end so that its CRC is verified.
    """
    path = Path(path)
    gz = is_gzip(path)
    try:
        with open_decompressed(path) as f:
            head = _read_idx_head(f)
            dtype, dims, header = _parse_idx_header(head, path)
            count = math.prod(dims)
            expected = count * dtype.itemsize
            if not gz:  # a plain file's size is known: compare before reading
                actual = os.fstat(f.fileno()).st_size - header
                if actual != expected:
                    _idx_size_error(path, dims, expected, actual)
            if (problem := _beyond_memory(expected)) is not None:
                raise DataError(f"{path}: {problem}")
            body = _read_up_to(f, expected)
            extra = 0
            while chunk := f.read(CHUNK):  # to the end: counts extra bytes, checks the CRC
                extra += len(chunk)
    except GZIP_ERRORS as err:
        raise _read_failure(path, err, gz) from None
    except MemoryError:
        raise DataError(f"{path}: too large to load into memory") from None
    if len(body) != expected or extra:
        _idx_size_error(path, dims, expected, len(body) + extra)
    array = np.frombuffer(body, dtype=dtype, count=count)
    return array.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def _idx_size_error(path: Path, dims: tuple[int, ...], expected: int, actual: int) -> None:
    """Raise the DataError of an IDX file whose data is shorter or longer than its header says."""
    if actual < expected:
        raise DataError(
            f"{path}: truncated: header promises {expected} bytes of data "
            f"(dims {list(dims)}), file has {actual}"
        )
    raise DataError(
        f"{path}: {actual - expected} extra bytes: header promises {expected} bytes of data "
        f"(dims {list(dims)}), file has {actual}"
    )


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
    if 0 in images.shape:
        raise DataError(f"{images_path}: holds no images (dims {list(images.shape)})")
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


def _labels_from(
    archive: np.lib.npyio.NpzFile, names: list[str], path: Path, count: int
) -> np.ndarray | None:
    """The label array of an .npz archive (first of LABEL_KEYS), checked against the image count."""
    key = next((k for k in LABEL_KEYS if k in names), None)
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


# Anything numpy or zipfile may raise on a malformed .npy/.npz (an encrypted zip member raises
# RuntimeError, an unknown compression method NotImplementedError, a header that is no Python
# literal SyntaxError or TokenError): each means "not a readable file", never a crash.
ARRAY_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    TypeError,
    RuntimeError,
    NotImplementedError,
    SyntaxError,
    MemoryError,
    OverflowError,
    struct.error,
    tokenize.TokenError,  # numpy tokenizes the header's Python literal
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
)
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"
PICKLE_REFUSED = "object arrays / pickled data are refused"


def _check_npy_header(f: BinaryIO, size: int, label: str = "") -> None:
    """Refuse an .npy stream by its header alone: objects (pickles), or less data than promised.

    numpy allocates the whole array a header describes before reading it, so a few hostile
    bytes could otherwise ask for terabytes.
    """
    magic = f.read(len(NPY_MAGIC))
    if magic != NPY_MAGIC:
        if magic[:1] == b"\x80":  # the PROTO opcode that starts a pickle
            raise DataError(f"{label}holds pickled data; {PICKLE_REFUSED}")
        raise DataError(f"{label}not an .npy array (no \\x93NUMPY magic)")
    f.seek(0)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    else:  # 2.0 and 3.0 share the layout; 3.0 only allows UTF-8 in field names
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    if dtype.hasobject:
        raise DataError(f"{label}holds Python objects ({dtype}); {PICKLE_REFUSED}")
    expected = math.prod(shape) * dtype.itemsize
    actual = size - f.tell()
    if expected > actual:
        raise DataError(
            f"{label}truncated: header promises {expected} bytes of data "
            f"(shape {list(shape)}, {dtype}), has {actual}"
        )
    if (problem := _beyond_memory(expected)) is not None:
        raise DataError(f"{label}{problem}")


def _check_array_file(path: Path) -> list[str]:
    """Check every array of an .npy or .npz file from its header; the .npz array names."""
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
        f.seek(0)
        if not head.startswith(ZIP_MAGIC):
            _check_npy_header(f, os.fstat(f.fileno()).st_size)
            return []
    names = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue  # numpy would hand such a member back as raw bytes: never read it
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as member:
                _check_npy_header(member, info.file_size, f"array {name!r} ")
            names.append(name)
    return names


def read_array_file(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read images (uint8 NCHW) and optional int64 labels from a .npy or .npz file.

    Nothing is ever unpickled: object arrays and pickles are refused (``allow_pickle=False``),
    and each array's header is checked against the file before numpy allocates it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: expected a .npy or .npz file")
    try:
        names = _check_array_file(path)
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except DataError as err:
        raise DataError(f"{path}: not a readable {suffix} file: {err}") from None
    except ARRAY_ERRORS as err:
        raise DataError(f"{path}: not a readable {suffix} file ({_describe(err)})") from None
    if isinstance(loaded, np.ndarray):
        return to_uint8_nchw(loaded, source=str(path)), None
    with loaded as archive:
        try:
            key = next((k for k in IMAGE_KEYS if k in names), None)
            if key is None and len(names) == 1 and names[0] not in LABEL_KEYS:
                key = names[0]
            if key is None:
                raise DataError(
                    f"{path}: no image array; expected one of the keys {list(IMAGE_KEYS)} "
                    f"or a single array, found {names}"
                )
            images = to_uint8_nchw(archive[key], source=f"{path}[{key!r}]")
            return images, _labels_from(archive, names, path, len(images))
        except ARRAY_ERRORS as err:
            raise DataError(f"{path}: not a readable .npz file ({_describe(err)})") from None


def _describe(err: BaseException) -> str:
    """One short line for an exception from a third-party reader."""
    text = " ".join(str(err).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return text or type(err).__name__


def _decode_image(path: Path) -> np.ndarray:
    """Decode one PNG/JPEG into uint8 [1, H, W] (grey) or [3, H, W] (colour; alpha dropped).

    Only PIL's PNG and JPEG decoders are allowed, whatever the content claims to be: a file
    named ``.png`` that holds EPS, TIFF or any other format is refused, never handed to that
    format's decoder (EPS would even start Ghostscript).
    """
    try:
        with Image.open(path, formats=DECODERS) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                wide = np.asarray(img).astype(np.int64)  # 16-bit grey: keep the top 8 bits
                return np.clip(wide >> 8, 0, 255).astype(np.uint8)[None]
            grey = img.mode in ("1", "L", "LA", "F") or (
                img.mode == "P" and img.palette is not None and img.palette.mode in ("L", "LA")
            )
            converted = img.convert("L" if grey else "RGB")
            array = np.asarray(converted, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: cannot read image: {_unidentified(path)}") from None
    except Exception as err:  # a decoder fed hostile bytes may raise anything: a data problem
        raise DataError(f"{path}: cannot read image ({_describe(err)})") from None
    return array[None] if grey else array.transpose(2, 0, 1)


def _unidentified(path: Path) -> str:
    """Why PIL could not open a file: damaged PNG/JPEG data, or another kind of file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        head = b""
    for name, magic in (("PNG", b"\x89PNG\r\n\x1a\n"), ("JPEG", b"\xff\xd8\xff")):
        if head.startswith(magic):
            return f"damaged or truncated {name} data"
    return "not a PNG or JPEG file" + (" (empty)" if not head else "")


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
