"""The dataset catalog: search folders, checksums and downloads from a local HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import socket
import struct

import numpy as np
import pytest

from conftest import FASHION_DIR, needs_fashion
from vaekit.data import catalog
from vaekit.data.catalog import CatalogEntry, RemoteFile
from vaekit.errors import DataError

NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array, written independently of the reader under test."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def toy_contents() -> dict[str, bytes]:
    """Decompressed content of a 12-train / 5-test dataset of 28x28 images."""
    rng = np.random.default_rng(7)
    return {
        NAMES[0]: idx_bytes(rng.integers(0, 256, (12, 28, 28))),
        NAMES[1]: idx_bytes(np.arange(12) % 3),
        NAMES[2]: idx_bytes(rng.integers(0, 256, (5, 28, 28))),
        NAMES[3]: idx_bytes(np.arange(5) % 3),
    }


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """A catalog entry "toy" whose files (gzipped) sit in tmp/source; env points at tmp."""
    contents = toy_contents()
    source = tmp_path / "source"
    source.mkdir()
    for name, data in contents.items():
        (source / f"{name}.gz").write_bytes(gzip.compress(data))
    entry = CatalogEntry(
        name="toy",
        description="a toy dataset",
        mirrors=("http://127.0.0.1:9/never-used/",),
        files=tuple(
            RemoteFile(f"{n}.gz", hashlib.sha256(d).hexdigest(), len(d))
            for n, d in contents.items()
        ),
        system_dirs=(tmp_path / "system" / "toy",),
        class_names=("a", "b", "c"),
    )
    monkeypatch.setitem(catalog.CATALOG, "toy", entry)
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VAEKIT_DATA", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return source


def refused_url() -> str:
    """A URL on a local port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("VAEKIT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert catalog.cache_dir() == tmp_path / "home" / ".cache" / "vaekit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert catalog.cache_dir() == tmp_path / "xdg" / "vaekit"
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "mine"))
    assert catalog.cache_dir() == tmp_path / "mine"


def test_search_dirs_order(toy, monkeypatch, tmp_path):
    assert catalog.search_dirs("toy") == [tmp_path / "system" / "toy", tmp_path / "cache" / "toy"]
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "data"))
    assert catalog.search_dirs("toy") == [
        tmp_path / "system" / "toy",
        tmp_path / "data" / "toy",
        tmp_path / "data",
        tmp_path / "cache" / "toy",
    ]


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError, match=r"unknown catalog dataset 'cifar'.*fashion-mnist, mnist"):
        catalog.locate("cifar")
    with pytest.raises(DataError, match=r"'sprites' \(generated"):
        catalog.download("sprites", progress=False)


def test_locate_via_vaekit_data(toy, monkeypatch, tmp_path):
    assert catalog.locate("toy") is None
    data = tmp_path / "data"
    (data / "toy").mkdir(parents=True)
    monkeypatch.setenv("VAEKIT_DATA", str(data))
    for path in toy.iterdir():  # the root of $VAEKIT_DATA, decompressed copies
        (data / path.name.removesuffix(".gz")).write_bytes(gzip.decompress(path.read_bytes()))
    assert catalog.locate("toy") == data
    for path in list(toy.iterdir())[:3]:  # an incomplete $VAEKIT_DATA/toy is skipped
        (data / "toy" / path.name).write_bytes(path.read_bytes())
    assert catalog.locate("toy") == data
    last = next(p for p in toy.iterdir() if not (data / "toy" / p.name).exists())
    (data / "toy" / last.name).write_bytes(last.read_bytes())
    assert catalog.locate("toy") == data / "toy"


def test_verify_reports_each_problem(toy, tmp_path):
    assert catalog.verify("toy", toy) == []
    bad = tmp_path / "bad"
    bad.mkdir()
    for path in toy.iterdir():
        (bad / path.name).write_bytes(path.read_bytes())
    # A recompressed copy (different gzip bytes, same content) still verifies.
    content = gzip.decompress((toy / f"{NAMES[1]}.gz").read_bytes())
    (bad / f"{NAMES[1]}.gz").write_bytes(gzip.compress(content, compresslevel=1, mtime=123))
    assert catalog.verify("toy", bad) == []
    (bad / f"{NAMES[0]}.gz").unlink()
    (bad / f"{NAMES[2]}.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + b"x" * 10))
    labels = gzip.decompress((toy / f"{NAMES[3]}.gz").read_bytes())
    (bad / f"{NAMES[3]}.gz").write_bytes(gzip.compress(labels[:-1] + b"?"))  # same size
    problems = catalog.verify("toy", bad)
    assert len(problems) == 3
    assert problems[0] == f"{bad / NAMES[0]}.gz: missing"
    assert f"{NAMES[2]}.gz: 14 bytes decompressed, expected" in problems[1]
    expected = catalog.CATALOG["toy"].files[3].sha256
    assert f"{NAMES[3]}.gz: sha256 of decompressed content is" in problems[2]
    assert problems[2].endswith(f"expected {expected}")


def test_load_catalog_split_reads_and_explains_absence(toy, monkeypatch, tmp_path):
    with pytest.raises(DataError) as err:
        catalog.load_catalog_split("toy", "train")
    message = str(err.value)
    assert "dataset 'toy' not found in" in message and str(tmp_path / "cache" / "toy") in message
    assert "run `vaekit data download toy`" in message
    monkeypatch.setenv("VAEKIT_DATA", str(toy))
    x, y = catalog.load_catalog_split("toy", "train")
    expected = np.frombuffer(toy_contents()[NAMES[0]][16:], np.uint8).reshape(12, 1, 28, 28)
    np.testing.assert_array_equal(x, expected)
    assert y.tolist() == [i % 3 for i in range(12)]
    xt, yt = catalog.load_catalog_split("toy", "test")
    assert xt.shape == (5, 1, 28, 28) and yt.shape == (5,)
    assert not x.flags.writeable  # shared through the cache
    assert catalog.load_catalog_split("toy", "train")[0] is x


def test_download_success_then_nothing_to_do(toy, serve, tmp_path):
    url = serve(toy)
    dest = catalog.download("toy", mirrors=[url], dest=tmp_path / "dl", progress=False)
    assert dest == tmp_path / "dl"
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    assert catalog.verify("toy", dest) == []
    assert len(serve.requests) == 4
    catalog.download("toy", mirrors=[url], dest=dest, progress=False)
    assert len(serve.requests) == 4  # everything present and valid: no request


def test_download_defaults_to_the_cache_and_replaces_a_bad_copy(toy, serve, tmp_path):
    cache = tmp_path / "cache" / "toy"
    cache.mkdir(parents=True)
    (cache / NAMES[1]).write_bytes(b"stale decompressed copy")  # would shadow the .gz
    url = serve(toy)
    assert catalog.download("toy", mirrors=[url], progress=True) == cache
    assert not (cache / NAMES[1]).exists()
    assert catalog.verify("toy", cache) == []
    assert catalog.locate("toy") == cache


def test_download_of_corrupt_file_leaves_nothing(toy, serve, tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for path in toy.iterdir():
        data = bytearray(gzip.decompress(path.read_bytes()))
        data[-1] ^= 1
        (corrupt / path.name).write_bytes(gzip.compress(bytes(data)))
    dest = tmp_path / "dl"
    with pytest.raises(DataError) as err:
        catalog.download("toy", mirrors=[serve(corrupt)], dest=dest, progress=False)
    message = str(err.value)
    first = catalog.CATALOG["toy"].files[0]
    actual = hashlib.sha256(gzip.decompress((corrupt / first.name).read_bytes())).hexdigest()
    assert f"could not download {first.name}" in message
    assert f"is {actual}, expected {first.sha256}" in message
    assert "\n" not in message
    assert list(dest.iterdir()) == []


def test_download_falls_back_to_the_next_mirror(toy, serve, tmp_path):
    empty = tmp_path / "empty"  # serves 404 for everything
    empty.mkdir()
    dest = catalog.download(
        "toy",
        mirrors=[refused_url(), serve(empty), serve(toy)],
        dest=tmp_path / "dl",
        progress=False,
    )
    assert catalog.verify("toy", dest) == []
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in NAMES)


def test_download_moves_past_a_mirror_with_a_bad_copy(toy, serve, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for path in toy.iterdir():
        (bad / path.name).write_bytes(gzip.compress(b"wrong"))
    dest = catalog.download(
        "toy", mirrors=[serve(bad), serve(toy)], dest=tmp_path / "dl", progress=False
    )
    assert catalog.verify("toy", dest) == []


def test_download_when_every_mirror_fails_names_each(toy, serve, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = refused_url()
    with pytest.raises(DataError) as err:
        catalog.download(
            "toy", mirrors=[refused, serve(empty)], dest=tmp_path / "dl", progress=False
        )
    message = str(err.value)
    assert f"{refused}{NAMES[0]}.gz: [Errno" in message and "HTTP 404" in message
    assert list((tmp_path / "dl").iterdir()) == []


def test_list_and_info(toy, monkeypatch):
    rows = {row["name"]: row for row in catalog.list_datasets()}
    assert rows["toy"]["location"] == "not installed"
    assert rows["sprites"]["location"] == "generated"
    assert {"fashion-mnist", "mnist"} <= set(rows)
    info = catalog.dataset_info("toy")
    assert info["location"] == "not installed" and "vaekit data download toy" in info["hint"]
    monkeypatch.setenv("VAEKIT_DATA", str(toy))
    info = catalog.dataset_info("toy")
    assert info["location"] == str(toy) and info["checksums"] == "ok"
    assert (info["train_count"], info["test_count"]) == (12, 5)
    assert info["image_shape"] == [1, 28, 28] and info["classes"] == ["a", "b", "c"]
    assert [f["name"] for f in info["files"]] == [f"{n}.gz" for n in NAMES]
    (toy / f"{NAMES[3]}.gz").write_bytes(gzip.compress(b"\0" * 10))
    info = catalog.dataset_info("toy")
    assert info["checksums"] == "FAILED" and len(info["problems"]) == 1
    assert catalog.dataset_info("sprites")["factors"] == ["shape", "scale", "rotation", "x", "y"]


@needs_fashion
def test_installed_fashion_mnist_matches_the_catalog_digests():
    assert catalog.verify("fashion-mnist", FASHION_DIR) == []
    assert catalog.locate("fashion-mnist") == FASHION_DIR
