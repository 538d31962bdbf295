"""Named datasets: where to find them on disk, how to download them and how to check them.

A catalog dataset is a set of IDX files with known SHA-256 digests. Digests and sizes are of
the *decompressed* content, so a recompressed copy (such as the one Debian ships) verifies too.
Files are looked for in system folders, ``$VAEKIT_DATA`` and the cache, in that order.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vaekit.data.formats import (
    GZIP_ERRORS,
    GZIP_MAGIC,
    idx_header,
    open_decompressed,
    read_idx_pair,
)
from vaekit.data.sprites import SHAPE_NAMES, SPRITE_FACTORS
from vaekit.errors import DataError

TIMEOUT_S = 30.0
CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name on the mirrors and the digest and size once gunzipped."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class CatalogEntry:
    """A downloadable dataset: mirrors to fetch from, files to expect, folders to look in."""

    name: str
    description: str
    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]
    system_dirs: tuple[Path, ...]
    class_names: tuple[str, ...]


def _idx_files(digests: tuple[str, str, str, str]) -> tuple[RemoteFile, ...]:
    """The four MNIST-layout files (train/t10k images/labels) with their decompressed digests."""
    names = (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )
    sizes = (47040016, 60008, 7840016, 10008)
    return tuple(RemoteFile(n, d, s) for n, d, s in zip(names, digests, sizes, strict=True))


CATALOG: dict[str, CatalogEntry] = {
    "fashion-mnist": CatalogEntry(
        name="fashion-mnist",
        description="Zalando Fashion-MNIST: 70,000 28x28 grey clothing images, 10 classes",
        mirrors=(
            # The S3 website endpoint serves plain HTTP only; the digests guard the content.
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        files=_idx_files(
            (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            )
        ),
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "mnist": CatalogEntry(
        name="mnist",
        description="LeCun et al. MNIST: 70,000 28x28 grey handwritten digits, 10 classes",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        files=_idx_files(
            (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            )
        ),
        system_dirs=(Path("/usr/share/datasets/mnist"),),
        class_names=tuple(str(d) for d in range(10)),
    ),
}

GENERATED: dict[str, str] = {
    "sprites": "procedural dSprites-like shapes (square, ellipse, heart) with 5 known factors",
}


def known_names() -> list[str]:
    """Every dataset name a config may use: catalog entries and generated datasets."""
    return [*CATALOG, *GENERATED]


def get_entry(name: str) -> CatalogEntry:
    """The catalog entry of ``name``; DataError listing the known names otherwise."""
    entry = CATALOG.get(name)
    if entry is None:
        hint = " (generated, nothing to download)" if name in GENERATED else ""
        raise DataError(
            f"unknown catalog dataset {name!r}{hint}; known: {', '.join(known_names())}"
        )
    return entry


def cache_dir() -> Path:
    """Where downloads go: $VAEKIT_CACHE, else $XDG_CACHE_HOME/vaekit, else ~/.cache/vaekit."""
    if os.environ.get("VAEKIT_CACHE"):
        return Path(os.environ["VAEKIT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "vaekit"
    return Path.home() / ".cache" / "vaekit"


def search_dirs(name: str) -> list[Path]:
    """Folders searched for a dataset in order: system, $VAEKIT_DATA/<name>, $VAEKIT_DATA, cache."""
    entry = get_entry(name)
    dirs = list(entry.system_dirs)
    if os.environ.get("VAEKIT_DATA"):
        root = Path(os.environ["VAEKIT_DATA"]).expanduser()
        dirs += [root / name, root]
    dirs.append(cache_dir() / name)
    return dirs


def local_file(folder: Path, remote: RemoteFile) -> Path | None:
    """The copy of ``remote`` in ``folder``: ``x`` (decompressed, read faster) or ``x.gz``."""
    for candidate in (remote.name.removesuffix(".gz"), remote.name):
        path = folder / candidate
        if path.is_file():
            return path
    return None


def locate(name: str) -> Path | None:
    """The first search folder holding every file of a dataset (gzipped or not), or None."""
    entry = get_entry(name)
    for folder in search_dirs(name):
        if all(local_file(folder, f) is not None for f in entry.files):
            return folder
    return None


def digest(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file's decompressed content, read in chunks."""
    sha = hashlib.sha256()
    size = 0
    try:
        with open_decompressed(path) as f:
            while chunk := f.read(CHUNK):
                sha.update(chunk)
                size += len(chunk)
    except GZIP_ERRORS as err:
        raise DataError(f"{path}: corrupt gzip stream ({err})") from None
    return sha.hexdigest(), size


def _problem(path: Path, remote: RemoteFile) -> str | None:
    """Why ``path`` is not a good copy of ``remote`` (one line), or None when it verifies."""
    try:
        sha, size = digest(path)
    except DataError as err:
        return str(err)
    if size != remote.size:
        return f"{path}: {size} bytes decompressed, expected {remote.size}"
    if sha != remote.sha256:
        return f"{path}: sha256 of decompressed content is {sha}, expected {remote.sha256}"
    return None


def verify(name: str, folder: str | Path) -> list[str]:
    """Problems with a dataset's files in ``folder`` (missing, wrong size or digest); [] is OK."""
    entry = get_entry(name)
    folder = Path(folder)
    problems = []
    for remote in entry.files:
        path = local_file(folder, remote)
        if path is None:
            problems.append(f"{folder / remote.name}: missing")
        elif (problem := _problem(path, remote)) is not None:
            problems.append(problem)
    return problems


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    """A rich download progress bar, or None when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        yield bar


def _fetch_one(url: str, tmp: Path, label: str, bar: Any) -> None:
    """Stream ``url`` into ``tmp`` (fsynced), advancing the progress bar if there is one."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
        total = response.headers.get("Content-Length")
        task = bar.add_task(label, total=int(total) if total else None) if bar else None
        while chunk := response.read(CHUNK):
            out.write(chunk)
            if bar is not None:
                bar.advance(task, len(chunk))
        out.flush()
        os.fsync(out.fileno())


def _download_file(remote: RemoteFile, mirrors: list[str], dest: Path, bar: Any) -> Path:
    """Fetch one file from the first mirror that serves a verifying copy; atomic, no leftovers."""
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + remote.name
        fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.name}.", suffix=".part", dir=dest)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _fetch_one(url, tmp, remote.name, bar)
            problem = _problem(tmp, remote)
            if problem is not None:
                failures.append(f"{url}: {problem.removeprefix(f'{tmp}: ')}")
                continue
            with open(tmp, "rb") as f:
                gzipped = f.read(2) == GZIP_MAGIC
            # A mirror that serves the content uncompressed gets a name without ".gz".
            final = dest / (remote.name if gzipped else remote.name.removesuffix(".gz"))
            os.replace(tmp, final)
            return final
        except urllib.error.HTTPError as err:
            failures.append(f"{url}: HTTP {err.code} {err.reason}")
            err.close()
        except (urllib.error.URLError, HTTPException, OSError, ValueError) as err:
            failures.append(f"{url}: {getattr(err, 'reason', None) or err}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DataError(f"could not download {remote.name}: {'; '.join(failures) or 'no mirrors'}")


def download(
    name: str,
    *,
    mirrors: list[str] | None = None,
    dest: Path | None = None,
    progress: bool = True,
) -> Path:
    """Fetch a catalog dataset's missing or bad files into ``dest`` (default the cache).

    Mirrors are tried in order, moving on after a network error or a digest mismatch; each file
    is streamed to a temporary file in ``dest``, verified, then renamed into place, so a failed
    download leaves nothing behind. ``mirrors`` replaces the entry's own (for tests, local copies).
    """
    entry = get_entry(name)
    dest = Path(dest) if dest is not None else cache_dir() / name
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{dest}: cannot create download folder ({err.strerror or err})") from None
    urls = list(entry.mirrors if mirrors is None else mirrors)
    with _progress_bar(progress) as bar:
        for remote in entry.files:
            existing = local_file(dest, remote)
            if existing is not None and _problem(existing, remote) is None:
                continue
            final = _download_file(remote, urls, dest, bar)
            if existing is not None and existing != final:
                existing.unlink(missing_ok=True)  # a bad copy would shadow the good one
    return dest


def _split_files(entry: CatalogEntry, split: str) -> tuple[RemoteFile, RemoteFile]:
    """The (images, labels) files of the official train or test split."""
    prefix = {"train": "train-", "test": "t10k-"}[split]
    images = next(f for f in entry.files if f.name.startswith(prefix + "images"))
    labels = next(f for f in entry.files if f.name.startswith(prefix + "labels"))
    return images, labels


@functools.lru_cache(maxsize=4)
def _read_cached(images: Path, labels: Path, stamp: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Decompress an IDX pair once per process (``stamp`` changes when the files do)."""
    arrays = read_idx_pair(images, labels)
    for array in arrays:
        array.flags.writeable = False
    return arrays


def load_catalog_split(name: str, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """Official split of a catalog dataset: uint8 [N, 1, 28, 28] and int64 [N], both read-only.

    The arrays are cached and shared between calls, hence read-only: copy before changing them.
    """
    entry = get_entry(name)
    folder = locate(name)
    if folder is None:
        dirs = ", ".join(str(d) for d in search_dirs(name))
        raise DataError(f"dataset {name!r} not found in {dirs}; run `vaekit data download {name}`")
    paths = [local_file(folder, f) for f in _split_files(entry, split)]
    images_path, labels_path = (p for p in paths if p is not None)
    stamp = tuple(v for p in (images_path, labels_path) for v in _stat(p))
    images, labels = _read_cached(images_path, labels_path, stamp)
    return images, labels


def _stat(path: Path) -> tuple[int, int]:
    """Size and modification time of a file, to notice a file replaced under the cache."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def list_datasets() -> list[dict[str, str]]:
    """One row per known dataset: name, where it is ("not installed", "generated") and what."""
    rows = []
    for name, entry in CATALOG.items():
        folder = locate(name)
        where = str(folder) if folder is not None else "not installed"
        rows.append({"name": name, "location": where, "description": entry.description})
    for name, description in GENERATED.items():
        rows.append({"name": name, "location": "generated", "description": description})
    return rows


def dataset_info(name: str, *, check: bool = True) -> dict[str, Any]:
    """Location, files, sizes, checksum status, split sizes, image shape and classes of a dataset.

    ``check`` decompresses every file to verify its SHA-256 (a fraction of a second for MNIST).
    """
    if name in GENERATED:
        return {
            "name": name,
            "description": GENERATED[name],
            "location": "generated",
            "image_shape": [1, 28, 28],
            "note": "any data.image_size >= 16; train size from data.sprites_count",
            "factors": list(SPRITE_FACTORS),
            "classes": list(SHAPE_NAMES),
        }
    entry = get_entry(name)
    folder = locate(name)
    info: dict[str, Any] = {
        "name": name,
        "description": entry.description,
        "location": str(folder) if folder is not None else "not installed",
        "search_dirs": [str(d) for d in search_dirs(name)],
        "mirrors": list(entry.mirrors),
        "classes": list(entry.class_names),
    }
    if folder is None:
        info["hint"] = f"run `vaekit data download {name}`"
        return info
    files = []
    for remote in entry.files:
        path = local_file(folder, remote)
        assert path is not None  # locate() found every file
        files.append({"name": path.name, "bytes": path.stat().st_size, "sha256": remote.sha256})
    info["files"] = files
    if check:
        problems = verify(name, folder)
        info["checksums"] = "ok" if not problems else "FAILED"
        if problems:
            info["problems"] = problems
    for split in ("train", "test"):
        images_remote, _ = _split_files(entry, split)
        path = local_file(folder, images_remote)
        assert path is not None
        _, dims = idx_header(path)
        info[f"{split}_count"] = dims[0]
        info["image_shape"] = [1, *dims[1:]]
    return info
