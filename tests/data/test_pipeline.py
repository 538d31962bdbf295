"""From config to uint8 tensors: splits, user datasets, batches and per-batch model input."""

from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import needs_fashion
from vaekit.config import DataConfig
from vaekit.data import catalog
from vaekit.data.pipeline import (
    ImageData,
    batch_indices,
    iterate_batches,
    iterate_labelled_batches,
    load_dataset,
    resolve_name,
    split_train_val,
    to_model_input,
)
from vaekit.errors import DataError
from vaekit.probability.noise import rows_of


def numbered(n: int, shape=(1, 4, 4)) -> ImageData:
    """Images whose labels are their own index, to track examples through splits."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, *shape)
    return ImageData(images.contiguous(), torch.arange(n), None, "numbered")


def ids(data: ImageData) -> set[int]:
    return set(data.labels.tolist())


def test_image_data_basics():
    data = numbered(10, (3, 5, 6))
    assert len(data) == 10 and data.shape == (3, 5, 6)
    part = data.subset(torch.tensor([7, 2]))
    assert part.labels.tolist() == [7, 2] and part.images[0, 2, 4, 5].item() == 7
    assert part.name == "numbered"
    with pytest.raises(ValueError, match=r"uint8"):
        ImageData(torch.zeros(2, 1, 3, 3), None, None, "x")
    with pytest.raises(ValueError, match=r"labels has 3 rows for 2 images"):
        ImageData(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.zeros(3), None, "x")


def test_split_train_val_is_deterministic_and_disjoint():
    data = numbered(1000)
    train, val = split_train_val(data, 0.1, seed=3)
    assert (len(train), len(val)) == (900, 100)
    assert ids(train) | ids(val) == set(range(1000)) and not ids(train) & ids(val)
    again_train, again_val = split_train_val(data, 0.1, seed=3)
    assert torch.equal(train.labels, again_train.labels) and torch.equal(
        val.labels, again_val.labels
    )
    _, other_val = split_train_val(data, 0.1, seed=4)
    assert ids(other_val) != ids(val)
    assert sorted(val.labels.tolist()) != val.labels.tolist()  # permuted, not a sorted slice


def test_batches_cover_every_index_once_per_epoch():
    data = numbered(10)
    generator = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(2):
        batches = list(iterate_labelled_batches(data, 4, shuffle=True, generator=generator))
        assert [len(x) for x, _ in batches] == [4, 4, 2]
        order = torch.cat([y for _, y in batches]).tolist()
        assert sorted(order) == list(range(10))
        for x, y in batches:
            assert torch.equal(x[:, 0, 0, 0].long(), y)  # images travel with their labels
        epochs.append(order)
    assert epochs[0] != epochs[1]  # a new permutation each epoch
    assert epochs[0] != list(range(10))


def test_batches_in_order_drop_last_and_reproducible():
    data = numbered(10)
    plain = list(iterate_batches(data, 4, shuffle=False, generator=None))
    assert [b[:, 0, 0, 0].tolist() for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dropped = list(iterate_batches(data, 4, shuffle=False, generator=None, drop_last=True))
    assert [len(b) for b in dropped] == [4, 4]
    assert [len(b) for b in batch_indices(8, 4, shuffle=True, generator=None, drop_last=True)] == [
        4,
        4,
    ]
    a = [
        b.tolist()
        for b in batch_indices(
            50, 7, shuffle=True, generator=torch.Generator().manual_seed(1), drop_last=False
        )
    ]
    b = [
        b.tolist()
        for b in batch_indices(
            50, 7, shuffle=True, generator=torch.Generator().manual_seed(1), drop_last=False
        )
    ]
    assert a == b
    assert plain[0].dtype == torch.uint8
    with pytest.raises(ValueError, match=r"batch_size"):
        next(batch_indices(5, 0, shuffle=False, generator=None, drop_last=False))


def test_to_model_input_none_is_x_over_255():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    y = to_model_input(x, binarize="none", dequantize=False)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, x.float() / 255)
    torch.testing.assert_close(to_model_input(x, binarize="static", dequantize=False), y)
    with pytest.raises(ValueError, match=r"uint8"):
        to_model_input(y, binarize="none", dequantize=False)


def test_dynamic_binarization_is_bernoulli_of_the_intensity():
    x = torch.tensor([0, 51, 128, 204, 255], dtype=torch.uint8).view(5, 1, 1, 1)
    x = x.expand(5, 1, 100, 100).contiguous()  # 10,000 draws per intensity
    g = torch.Generator().manual_seed(0)
    y = to_model_input(x, binarize="dynamic", dequantize=False, generator=g)
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    means = y.mean(dim=(1, 2, 3))
    torch.testing.assert_close(means, x[:, 0, 0, 0].float() / 255, atol=0.02, rtol=0)
    assert means[0] == 0 and means[-1] == 1
    y2 = to_model_input(x, binarize="dynamic", dequantize=False, generator=g)
    assert not torch.equal(y, y2)  # fresh noise every batch
    same = to_model_input(
        x, binarize="dynamic", dequantize=False, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(y, same)


def test_dequantization_range_and_mean():
    x = torch.tensor([0, 100, 255], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 80, 80)
    g = torch.Generator().manual_seed(0)
    y = to_model_input(x.contiguous(), binarize="none", dequantize=True, generator=g)
    low = x.float() / 256
    assert (y >= low).all() and (y < low + 1 / 256).all()
    torch.testing.assert_close(
        y.mean(dim=(1, 2, 3)), (x[:, 0, 0, 0].float() + 0.5) / 256, atol=2e-4, rtol=0
    )
    assert y.max() < 1.0
    with pytest.raises(ValueError, match=r"excludes binarize"):
        to_model_input(x, binarize="dynamic", dequantize=True)


def test_process_blocks_of_an_epoch_cover_every_example_once_and_epochs_differ():
    n, batch, world = 103, 10, 3  # the last batch of 3 still gives each process a row
    generator = torch.Generator().manual_seed(1)
    orders = []
    for _epoch in range(2):
        per_rank = [[] for _ in range(world)]
        for index in batch_indices(n, batch, shuffle=True, generator=generator, drop_last=False):
            for rank in range(world):
                share = rows_of(len(index), rank, world)
                per_rank[rank].append(index[share.start : share.stop])
        blocks = [torch.cat(parts) for parts in per_rank]
        together = torch.cat(blocks)
        assert torch.equal(together.sort().values, torch.arange(n))  # each example once
        orders.append(together)
    assert not torch.equal(orders[0], orders[1])  # a fresh permutation each epoch


def sprites_cfg(**kw) -> DataConfig:
    return DataConfig(name="sprites", sprites_count=600, **kw)


def test_sprites_splits():
    train, val, test = (load_dataset(sprites_cfg(), s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (540, 60, 1000)
    assert train.shape == (1, 28, 28) and train.class_names == ("square", "ellipse", "heart")
    assert torch.equal(train.labels, train.factors[:, 0].long())
    assert train.factors.shape == (540, 5)
    # test comes from its own seed: not a copy of the first training draws
    assert not torch.equal(test.factors[:60], val.factors)
    assert torch.equal(load_dataset(sprites_cfg(), "val").images, val.images)


def test_sprites_size_channels_and_limit():
    data = load_dataset(sprites_cfg(image_size=64, channels=3, limit=100), "train")
    assert len(data) == 100 and data.shape == (3, 64, 64)
    assert torch.equal(data.images[:, 0], data.images[:, 2])


def test_static_binarization_is_fixed_per_split():
    cfg = sprites_cfg(binarize="static")
    a = load_dataset(cfg, "train")
    b = load_dataset(cfg, "train")
    assert torch.equal(a.images, b.images)
    assert set(a.images.unique().tolist()) == {0, 255}
    grey = load_dataset(sprites_cfg(), "train")
    assert torch.equal(grey.labels, a.labels)
    assert abs(a.images.float().mean() - grey.images.float().mean()) < 1.0
    edge = (grey.images > 0) & (grey.images < 255)
    assert (a.images[edge] == 0).any() and (a.images[edge] == 255).any()
    limited = load_dataset(sprites_cfg(binarize="static", limit=50), "train")
    assert torch.equal(limited.images, a.images[:50])  # limit takes a prefix of the same draw
    other = load_dataset(sprites_cfg(binarize="static", split_seed=1), "test")
    assert not torch.equal(other.images, load_dataset(cfg, "test").images)


def test_static_with_dequantize_is_refused():
    with pytest.raises(DataError, match=r"data.binarize = 'static' and data.dequantize"):
        load_dataset(sprites_cfg(binarize="static", dequantize=True), "train")


def test_resolve_name(monkeypatch, tmp_path):
    assert resolve_name(DataConfig(name="mnist")) == "mnist"
    assert resolve_name(DataConfig(path=tmp_path)) is None
    monkeypatch.setattr(catalog, "locate", lambda name: None)
    assert resolve_name(DataConfig()) == "sprites"
    monkeypatch.setattr(catalog, "locate", lambda name: tmp_path)
    assert resolve_name(DataConfig()) == "fashion-mnist"
    with pytest.raises(DataError, match=r"unknown dataset 'cifar10'; known: fashion-mnist, mnist"):
        resolve_name(DataConfig(name="cifar10"))


def test_missing_catalog_dataset(monkeypatch, tmp_path):
    entry = dataclasses.replace(catalog.CATALOG["mnist"], system_dirs=(tmp_path / "none",))
    monkeypatch.setitem(catalog.CATALOG, "mnist", entry)
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("VAEKIT_DATA", raising=False)
    with pytest.raises(
        DataError, match=r"dataset 'mnist' not found in .*vaekit data download mnist"
    ):
        load_dataset(DataConfig(name="mnist"), "train")


def test_missing_user_path(tmp_path):
    with pytest.raises(DataError, match=r"data.path: .*nope.npz: no such file or folder"):
        load_dataset(DataConfig(path=tmp_path / "nope.npz"), "train")


def test_user_npz_splits_are_disjoint_and_deterministic(tmp_path):
    n = 200
    images = np.random.default_rng(0).integers(0, 256, (n, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", images=images, labels=np.arange(n))
    cfg = DataConfig(path=tmp_path / "mine.npz", val_fraction=0.1, test_fraction=0.2)
    train, val, test = (load_dataset(cfg, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (144, 16, 40)
    assert ids(train) | ids(val) | ids(test) == set(range(n))
    assert not (ids(train) & ids(val) or ids(train) & ids(test) or ids(val) & ids(test))
    for part in (train, val, test):  # images still travel with their labels
        np.testing.assert_array_equal(part.images[:, 0].numpy(), images[part.labels.numpy()])
    assert torch.equal(load_dataset(cfg, "test").labels, test.labels)
    # The test hold-out does not move when the validation fraction changes.
    other = cfg.model_copy(update={"val_fraction": 0.3})
    assert ids(load_dataset(other, "test")) == ids(test)
    assert len(load_dataset(cfg.model_copy(update={"limit": 10}), "train")) == 10


def test_user_npy_with_resize(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((30, 10, 10, 3)))
    data = load_dataset(DataConfig(path=tmp_path / "x.npy", image_size=6, channels=1), "train")
    assert data.shape == (1, 6, 6) and data.labels is None and data.images.dtype == torch.uint8


def _write_images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(6):
        (folder / "cats").mkdir(parents=True, exist_ok=True)
        (folder / "dogs").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + i, 18), dtype=np.uint8)).save(
            folder / "cats" / f"{i}.png"
        )
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
            folder / "dogs" / f"{i}.jpg", quality=95
        )


def test_user_image_folder(tmp_path):
    _write_images(tmp_path)
    cfg = DataConfig(path=tmp_path, image_size=16, val_fraction=0.0, test_fraction=0.25)
    train, test = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    assert (len(train), len(test)) == (9, 3)
    assert train.shape == (3, 16, 16)  # mixed grey and colour: RGB
    assert train.class_names == ("cats", "dogs")
    assert set(torch.cat([train.labels, test.labels]).tolist()) == {0, 1}
    cats = torch.cat([train.images[train.labels == 0], test.images[test.labels == 0]])
    assert torch.equal(cats[:, 0], cats[:, 1]) and torch.equal(cats[:, 0], cats[:, 2])
    grey = load_dataset(cfg.model_copy(update={"channels": 1}), "train")
    assert grey.shape == (1, 16, 16)


def test_user_image_folder_of_mixed_sizes_needs_image_size(tmp_path):
    _write_images(tmp_path)
    with pytest.raises(DataError, match=r"images differ in size .* set data.image_size"):
        load_dataset(DataConfig(path=tmp_path), "train")
    dogs = load_dataset(DataConfig(path=tmp_path / "dogs", val_fraction=0.0), "train")
    assert dogs.shape == (3, 12, 12) and dogs.labels is None  # one size: native kept


def _idx(array: np.ndarray) -> bytes:
    head = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(head + array.astype(np.uint8).tobytes())


def test_user_idx_folder_uses_its_test_files(tmp_path):
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 256, (40, 6, 7), dtype=np.uint8)
    test_x = rng.integers(0, 256, (8, 6, 7), dtype=np.uint8)
    files = {
        "emnist-letters-train-images-idx3-ubyte.gz": train_x,
        "emnist-letters-train-labels-idx1-ubyte.gz": np.arange(40) % 26,
        "emnist-letters-test-images-idx3-ubyte.gz": test_x,
        "emnist-letters-test-labels-idx1-ubyte.gz": np.arange(8),
    }
    for name, array in files.items():
        (tmp_path / name).write_bytes(_idx(array))
    cfg = DataConfig(path=tmp_path, val_fraction=0.25)
    test = load_dataset(cfg, "test")
    assert test.shape == (1, 7, 6)  # EMNIST is stored transposed
    np.testing.assert_array_equal(test.images[:, 0].numpy(), test_x.transpose(0, 2, 1))
    assert test.labels.tolist() == list(range(8))
    train, val = load_dataset(cfg, "train"), load_dataset(cfg, "val")
    assert (len(train), len(val)) == (30, 10)


@needs_fashion
def test_fashion_mnist_splits():
    cfg = DataConfig(name="fashion-mnist")
    train, val, test = (load_dataset(cfg, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (54000, 6000, 10000)
    assert train.shape == (1, 28, 28) and train.images.is_contiguous()
    assert train.class_names[0] == "T-shirt/top" and len(train.class_names) == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    counts = torch.bincount(train.labels, minlength=10) + torch.bincount(val.labels, minlength=10)
    assert counts.tolist() == [6000] * 10  # train and val partition the official train split
    weights = torch.randint(0, 2**20, (784,), generator=torch.Generator().manual_seed(0))

    def fingerprints(images: torch.Tensor) -> torch.Tensor:
        return (images.reshape(len(images), -1).long() @ weights).sort().values

    official, _ = catalog.load_catalog_split("fashion-mnist", "train")
    both = torch.cat([train.images, val.images])
    assert torch.equal(fingerprints(both), fingerprints(torch.from_numpy(official.copy())))
    small = load_dataset(DataConfig(name="fashion-mnist", image_size=14, limit=100), "train")
    assert len(small) == 100 and small.shape == (1, 14, 14)
    assert torch.equal(small.labels, train.labels[:100])
