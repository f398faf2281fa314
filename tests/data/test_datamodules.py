"""Data modules on the real mirrored files: sizes, values, fixed test binarization, errors."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch

from benchmark.runs import prepare_data
from datamodules import DataError, MNISTDataModule, OmniglotDataModule
from datamodules.device_batches import device_loader
from datamodules.files import DEFAULT_MIRROR, MIRROR_ENV, file_digest
from datamodules.omniglot import load_chardata

MIRROR = DEFAULT_MIRROR
UNREACHABLE = "http://127.0.0.1:9/"  # refused at once: the "offline" case without waiting


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No mirror and no reachable download location."""
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    monkeypatch.setenv(MIRROR_ENV, str(empty))
    monkeypatch.setattr("datamodules.mnist.MNIST.mirrors", [UNREACHABLE])
    monkeypatch.setattr("datamodules.mnist.LAROCHELLE_URL", UNREACHABLE)
    monkeypatch.setattr("datamodules.omniglot.CHARDATA_URL", UNREACHABLE + "chardata.mat")
    monkeypatch.setattr("datamodules.omniglot.Omniglot.download_url_prefix", UNREACHABLE)
    return tmp_path / "data"


def test_mnist_dynamic_splits_and_values(data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=data_dir)
    dm.setup()
    assert dm.train_data.shape == (60_000, 784) and dm.test_data.shape == (10_000, 784)
    assert dm.train_data.dtype == torch.float32
    assert dm.train_data.min() >= 0.0 and dm.train_data.max() <= 1.0
    assert len(dm.train_data.unique()) > 200  # grey levels, binarized per minibatch later
    assert dm.train_data.mean().item() == pytest.approx(0.1307, abs=0.002)
    assert set(dm.test_data.unique().tolist()) == {0.0, 1.0}
    assert dm.test_data.mean().item() == pytest.approx(0.1325, abs=0.005)


def test_test_binarization_is_fixed_across_instances_and_run_seeds(data_dir: Path) -> None:
    a = MNISTDataModule(data_dir=data_dir, seed=0, test_subset=2000)
    b = MNISTDataModule(data_dir=data_dir, seed=7, test_subset=2000)
    c = MNISTDataModule(data_dir=data_dir, seed=0, test_subset=2000, test_binarization_seed=1)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.test_data, b.test_data)
    assert not torch.equal(a.test_data, c.test_data)


def test_subsets_are_fixed_random_draws_not_the_first_rows(data_dir: Path) -> None:
    """Larochelle's test file is sorted by digit (zeros first, more ink than the average), so
    its first 1,000 rows are a biased sample; a fixed random subset is not."""
    full = MNISTDataModule(data_dir=data_dir, binarization="static")
    full.setup()
    subsets = [
        MNISTDataModule(
            data_dir=data_dir, binarization="static", seed=s, train_subset=1000, test_subset=1000
        )
        for s in (0, 3)
    ]
    for dm in subsets:
        dm.setup()
    a, b = subsets
    assert torch.equal(a.test_data, b.test_data) and torch.equal(a.train_data, b.train_data)
    assert a.test_data.shape == (1000, 784) and a.train_data.shape == (1000, 784)
    assert not torch.equal(a.test_data, full.test_data[:1000])
    # Every subset row is a row of the split (kept in order): the subset's rows match the full
    # split's rows at increasing positions.
    matches = (a.test_data @ full.test_data.T) == (a.test_data.sum(1, keepdim=True))
    matches &= full.test_data.sum(1) == a.test_data.sum(1, keepdim=True)
    assert matches.any(1).all()
    overall = full.test_data.mean().item()
    assert abs(full.test_data[:1000].mean().item() - overall) > 0.03  # the sorted head
    assert abs(a.test_data.mean().item() - overall) < 0.006  # ~5 standard errors


def test_monitor_points_are_one_fixed_order_of_the_test_split(data_dir: Path) -> None:
    a = MNISTDataModule(data_dir=data_dir, binarization="static", seed=0)
    b = MNISTDataModule(data_dir=data_dir, binarization="static", seed=5)
    first = a.monitor_points(300)
    assert torch.equal(first, b.monitor_points(300))
    assert torch.equal(a.monitor_points(1000)[:300], first)
    assert torch.equal(a.monitor_points().sum(0), a.test_data.sum(0))  # a permutation
    assert abs(first.mean().item() - a.test_data.mean().item()) < 0.008


def rows_of(data: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in data.mul(255).round().to(torch.uint8)}


def test_static_mnist_validates_on_larochelles_valid_file_and_trains_on_its_train_file(
    data_dir: Path,
) -> None:
    dm = MNISTDataModule(data_dir=data_dir, binarization="static", val_size=2000)
    dm.setup()
    valid = MNISTDataModule(data_dir=data_dir, binarization="static")._amat("valid")
    assert dm.train_data.shape == (50_000, 784) and dm.val_data.shape == (2000, 784)
    assert rows_of(dm.val_data) <= rows_of(valid)
    assert torch.equal(dm.train_data, dm._amat("train"))  # the valid file is not trained on
    assert (dm.val_data[:, 350:450].sum(1) > 0).float().mean() > 0.9  # digits, not the head
    assert torch.equal(dm.monitor_points(500, "val"), dm.monitor_points(1000, "val")[:500])
    assert torch.equal(dm.monitor_points(split="val").sum(0), dm.val_data.sum(0))
    (first, *_) = dm.val_dataloader()
    assert torch.equal(first, dm.val_data[:100])


def test_a_validation_split_is_held_out_of_training_the_same_for_every_seed(
    data_dir: Path,
) -> None:
    full = MNISTDataModule(data_dir=data_dir, binarization="none")
    full.setup()
    a = MNISTDataModule(data_dir=data_dir, binarization="none", val_size=5000, seed=0)
    b = MNISTDataModule(
        data_dir=data_dir, binarization="none", val_size=5000, seed=3, train_subset=1000
    )
    a.setup(), b.setup()
    assert a.train_data.shape[0] == 55_000 and torch.equal(a.val_data, b.val_data)
    train, val, everything = rows_of(a.train_data), rows_of(a.val_data), rows_of(full.train_data)
    assert not train & val and train | val == everything  # disjoint, and all of train
    assert rows_of(b.train_data) <= train  # the subset is drawn from what is left
    assert torch.equal(a.test_data, full.test_data)
    # Random rows, not the file's first: the digit classes of MNIST are spread through it.
    assert val != rows_of(full.train_data[:5000])
    dynamic = MNISTDataModule(data_dir=data_dir, val_size=5000, seed=1)
    dynamic.setup()
    assert set(dynamic.val_data.unique().tolist()) == {0.0, 1.0}  # binarized once, fixed
    again = MNISTDataModule(data_dir=data_dir, val_size=5000, seed=2)
    again.setup()
    assert torch.equal(dynamic.val_data, again.val_data)
    assert (dynamic.val_data - a.val_data).abs().mean() < 0.1  # the same images, binarized
    with pytest.raises(DataError, match=r"dataset\.val_size=60000 holds out every"):
        MNISTDataModule(data_dir=data_dir, binarization="none", val_size=60_000).setup()


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"binarization": "static", "val_size": 10_001}, "val_size=10001 .* the 10000 valid"),
        ({"val_size": 50_000, "train_subset": 10_001}, "train_subset=10001 .* the 10000 train"),
        ({"test_subset": 10_001}, "test_subset=10001 asks for more than the 10000 test"),
    ],
)
def test_a_split_smaller_than_asked_for_is_an_error_naming_the_key(
    data_dir: Path, sizes: dict[str, object], message: str
) -> None:
    with pytest.raises(DataError, match=rf"^dataset\.{message} images there are: choose at"):
        MNISTDataModule(data_dir=data_dir, **sizes).setup()


def test_mnist_static_is_larochelles_binarization(data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=data_dir, binarization="static")
    dm.setup()
    assert dm.train_data.shape == (60_000, 784) and dm.test_data.shape == (10_000, 784)
    assert set(dm.train_data.unique().tolist()) == {0.0, 1.0}
    assert dm.train_data.mean().item() == pytest.approx(0.13, abs=0.01)
    only_train = MNISTDataModule(
        data_dir=data_dir, binarization="static", static_include_valid=False
    )
    only_train.setup()
    assert only_train.train_data.shape == (50_000, 784)


def test_mnist_none_keeps_grey_levels_in_test(data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=data_dir, binarization="none", test_subset=100)
    dm.setup()
    assert len(dm.test_data.unique()) > 2


def test_mirror_is_never_written(tmp_path: Path) -> None:
    before = {
        p: p.stat().st_mtime_ns
        for p in MIRROR.rglob("*")
        if p.is_file() and "omniglot" not in p.parts
    }
    MNISTDataModule(data_dir=tmp_path).setup()
    MNISTDataModule(data_dir=tmp_path, binarization="static").setup()
    after = {
        p: p.stat().st_mtime_ns
        for p in MIRROR.rglob("*")
        if p.is_file() and "omniglot" not in p.parts
    }
    assert before == after
    assert (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()


def test_missing_mnist_offline_names_the_file_and_the_fix(offline: Path) -> None:
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte\.gz.*(Put the file|IWAER_DATA_MIRROR)"
    ):
        MNISTDataModule(data_dir=offline).setup()


def test_corrupt_mnist_file_is_reported(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    source = MIRROR / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    (raw / source.name).write_bytes(source.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is corrupt.*Delete it"):
        MNISTDataModule(data_dir=tmp_path).setup()


def test_corrupt_static_file_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    with gzip.open(folder / "binarized_mnist_train.amat.gz", "wb") as f:
        f.write(b"0 1 1 0\n" * 10)
    with pytest.raises(DataError, match=r"binarized_mnist_train\.amat\.gz is corrupt"):
        MNISTDataModule(data_dir=tmp_path, binarization="static").setup()


def test_static_binarization_is_refused_for_omniglot(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="binarization=static is not available for omniglot"):
        OmniglotDataModule(data_dir=tmp_path, binarization="static").setup()


def test_chardata_loader_reads_burdas_layout(tmp_path: Path) -> None:
    """784 x N matrices whose columns are images flattened in Fortran order."""
    rng = np.random.default_rng(0)
    train_images = rng.random((5, 28, 28)).astype(np.float32)
    test_images = rng.random((3, 28, 28)).astype(np.float32)
    train_images[0, 0, 1] = 2.0  # a marker that is not symmetric under transposition
    columns = {
        name: np.stack([im.flatten(order="F") for im in images], axis=1)
        for name, images in (("data", train_images), ("testdata", test_images))
    }
    scipy.io.savemat(tmp_path / "chardata.mat", columns)
    train, test = load_chardata(tmp_path / "chardata.mat")
    assert train.shape == (5, 784) and test.shape == (3, 784)
    np.testing.assert_array_equal(train.numpy(), train_images.reshape(5, 784))
    np.testing.assert_array_equal(test.numpy(), test_images.reshape(3, 784))
    assert train[0, 1] == 2.0


def test_chardata_with_wrong_layout_is_reported(tmp_path: Path) -> None:
    scipy.io.savemat(
        tmp_path / "chardata.mat", {"data": np.zeros((100, 3)), "testdata": np.zeros((784, 3))}
    )
    with pytest.raises(DataError, match="'data' has shape"):
        load_chardata(tmp_path / "chardata.mat")
    (tmp_path / "chardata.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=r"not a readable chardata\.mat"):
        load_chardata(tmp_path / "chardata.mat")


def test_missing_chardata_offline_points_to_the_file_and_to_the_images(offline: Path) -> None:
    with pytest.raises(DataError) as info:
        OmniglotDataModule(data_dir=offline).setup()
    message = str(info.value)
    assert "chardata.mat" in message and str(offline / "omniglot") in message
    assert "dataset=omniglot_images" in message


def test_corrupt_chardata_fails_its_checksum(tmp_path: Path) -> None:
    (tmp_path / "omniglot").mkdir()
    (tmp_path / "omniglot" / "chardata.mat").write_bytes(b"\0" * 1000)
    with pytest.raises(DataError, match=r"chardata\.mat is corrupt: its git checksum"):
        OmniglotDataModule(data_dir=tmp_path).setup()


def test_git_blob_checksum_matches_git(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"hello\n")
    assert file_digest(tmp_path / "f", "git") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_omniglot_images_split_by_drawer(data_dir: Path) -> None:
    dm = OmniglotDataModule(data_dir=data_dir, source="images")
    dm.setup()
    assert dm.train_data.shape == (24_345, 784) and dm.test_data.shape == (8_115, 784)
    assert dm.train_data.min() >= 0.0 and dm.train_data.max() <= 1.0
    assert 0.03 < dm.train_data.mean().item() < 0.2  # ink is the minority of the pixels
    assert set(dm.test_data.unique().tolist()) == {0.0, 1.0}
    assert (data_dir / "omniglot" / "images28.pt").is_file()  # cached for the next run


def test_missing_omniglot_images_offline_are_reported(offline: Path) -> None:
    with pytest.raises(DataError, match=r"images_background.*Unzip the official"):
        OmniglotDataModule(data_dir=offline, source="images").setup()


def test_train_loader_reshuffles_by_epoch_and_covers_the_split() -> None:
    data = torch.arange(10.0).unsqueeze(1)
    loader = device_loader(data, 3, shuffle=True, drop_last=False, seed=0)
    assert len(loader) == 4

    def epoch(e: int) -> torch.Tensor:
        loader.sampler.set_epoch(e)
        return torch.cat(list(loader)).squeeze(1)

    e0, e1 = epoch(0), epoch(1)
    assert sorted(e0.tolist()) == list(range(10))
    assert not torch.equal(e0, e1) and torch.equal(e0, epoch(0))
    dropping = device_loader(data, 3, shuffle=True, drop_last=True, seed=0)
    assert [b.shape[0] for b in dropping] == [3, 3, 3]


def test_dynamic_binarization_is_seeded_by_step() -> None:
    dm = MNISTDataModule(seed=0)
    grey = torch.full((200, 784), 0.3)

    def binarize(step: int, training: bool = True) -> torch.Tensor:
        dm.trainer = SimpleNamespace(training=training, global_step=step)
        return dm.on_after_batch_transfer(grey, 0)

    a = binarize(5)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert a.mean().item() == pytest.approx(0.3, abs=5 * (0.21 / a.numel()) ** 0.5)
    assert torch.equal(a, binarize(5)) and not torch.equal(a, binarize(6))
    assert torch.equal(binarize(5, training=False), grey)


def test_binarize_draws_each_pixel_with_its_own_intensity() -> None:
    """The training minibatches' binarization: P(x = 1) is each pixel's intensity, pixels
    drawn independently."""
    levels = torch.tensor([0.0, 0.02, 0.3, 0.5, 0.97, 1.0])
    n = 20_000
    dm = MNISTDataModule(seed=0)
    dm.trainer = SimpleNamespace(training=True, global_step=3)
    x = dm.on_after_batch_transfer(levels.repeat(n, 1), 0)
    assert x.dtype == levels.dtype and set(x.unique().tolist()) == {0.0, 1.0}
    frequency = x.mean(0)
    assert frequency[0] == 0 and frequency[-1] == 1
    se = (levels * (1 - levels) / n).sqrt()
    assert ((frequency - levels).abs() <= 5 * se).all()
    correlation = torch.corrcoef(x[:, 2:4].T)[0, 1]  # pixels of one image drawn independently
    assert correlation.abs() < 5 / n**0.5


def test_copying_from_the_mirror_leaves_an_exact_copy(tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=tmp_path)
    dm.prepare_data()
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        copied = tmp_path / "MNIST" / "raw" / name
        assert copied.read_bytes() == (MIRROR / "MNIST" / "raw" / name).read_bytes()
    shutil.rmtree(tmp_path / "MNIST")


def test_prepare_data_passes_available_data_sets(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert prepare_data.main(["mnist,omniglot_images", f"data_dir={data_dir}"]) == 0
    assert capsys.readouterr().out.splitlines() == ["data ok: mnist", "data ok: omniglot_images"]


def test_prepare_data_names_each_missing_data_set_in_one_line(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert prepare_data.main(["omniglot,mnist", f"data_dir={offline}"]) == 1
    chardata, mnist = capsys.readouterr().err.splitlines()
    assert chardata.startswith(f"error: chardata.mat is not in {offline / 'omniglot'}")
    assert "DATASETS=mnist,omniglot_images" in chardata
    assert mnist.startswith("error: train-images-idx3-ubyte.gz is not in")
    assert prepare_data.main(["mnistt"]) == 2
    assert capsys.readouterr().err == (
        "error: unknown dataset=mnistt: choose one of mnist, omniglot, omniglot_images\n"
    )
