"""ddif.data HDF5 datasets and writers: round trips, lazy per-worker reading, augmentation,
and every kind of bad file."""
from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from ddif.data import (HISRH5, FusionH5Writer, PanCollectionH5, RandomDihedral, dihedral, inspect_h5, open_h5,
                       write_hisr_h5, write_pancollection_h5)


def _images(n=5, c=4, size=16, ratio=4, guide=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"gt": torch.rand(n, c, size, size, generator=g),
            "ms": torch.rand(n, c, size // ratio, size // ratio, generator=g),
            "lms": torch.rand(n, c, size, size, generator=g),
            "pan": torch.rand(n, guide, size, size, generator=g)}


@pytest.fixture
def gf2_file(tmp_path):
    images = _images()
    path = write_pancollection_h5(tmp_path / "gf2.h5", max_dn=1023, **images)
    return path, images


def test_roundtrip_stores_dn_and_normalises_by_preset_max_dn(gf2_file):
    path, images = gf2_file
    with h5py.File(path) as f:
        assert set(f) == {"gt", "ms", "lms", "pan"}
        assert f["gt"].shape == (5, 4, 16, 16) and f["gt"].dtype == np.float32
        assert f["gt"].chunks[0] == 1                                  # one item per chunk
        np.testing.assert_allclose(f["lms"][2], images["lms"][2].numpy() * 1023, rtol=1e-6)
        assert float(f.attrs["max_dn"]) == 1023
    ds = PanCollectionH5(path, "gf2")                                    # gf2 preset: max DN 1023, 4 bands
    assert len(ds) == 5 and ds.has_gt and ds.ratio == 4 and ds.bands == 4 and ds.guide_bands == 1
    for i in (0, 4, -1):
        item = ds[i]
        assert set(item) == {"gt", "ms", "lms", "pan"}
        for k, v in item.items():
            assert v.dtype == torch.float32
            torch.testing.assert_close(v, images[k][i], rtol=0, atol=1e-6)
    with pytest.raises(IndexError):
        ds[5]


def test_integer_storage_and_plain_max_dn(tmp_path):
    images = _images(n=2)
    path = write_pancollection_h5(tmp_path / "u16.h5", max_dn=2047, dtype="uint16", **images)
    with h5py.File(path) as f:
        assert f["pan"].dtype == np.uint16 and int(f["pan"][...].max()) <= 2047
    ds = PanCollectionH5(path, 2047.0)                                   # a bare max DN: no band checks
    torch.testing.assert_close(ds[1]["pan"], images["pan"][1], rtol=0, atol=0.5 / 2047 + 1e-7)


def test_full_resolution_file_has_no_gt(tmp_path):
    images = _images(n=3)
    del images["gt"]
    path = write_pancollection_h5(tmp_path / "full.h5", max_dn=2047, **images)
    ds = PanCollectionH5(path, 2047)
    assert not ds.has_gt and set(ds[0]) == {"ms", "lms", "pan"}
    with pytest.raises(ValueError, match="full.h5.*missing dataset.*'gt'"):
        PanCollectionH5(path, 2047, train=True)                          # training needs ground truth


def test_hisr_layout_maps_keys(tmp_path):
    images = _images(n=2, c=31, size=32, guide=3)
    path = write_hisr_h5(tmp_path / "cave.h5", **images)
    with h5py.File(path) as f:
        assert set(f) == {"GT", "LRHSI", "HSI_up", "RGB"}
        np.testing.assert_allclose(f["RGB"][1], images["pan"][1].numpy(), rtol=1e-6)
    ds = HISRH5(path, "cave")
    assert (ds.bands, ds.guide_bands, ds.ratio) == (31, 3, 4)
    for k, v in ds[1].items():
        torch.testing.assert_close(v, images[k][1])
    assert isinstance(open_h5(path, "cave"), HISRH5)
    assert isinstance(open_h5(write_pancollection_h5(tmp_path / "p.h5", max_dn=1, **_images(n=1)), 1.0),
                      PanCollectionH5)
    with pytest.raises(ValueError, match="cave.h5.*looks like the 'hisr' layout"):
        PanCollectionH5(path, 1.0)


def test_reads_only_one_item_per_access(tmp_path, monkeypatch):
    """A file bigger than RAM must work: opening reads a corner per dataset and 8 items of lms /
    pan (the DN-scale check), whatever the file's length; every item access reads exactly that
    item's slices, never a whole dataset."""
    n, c, size = 2000, 4, 16
    path = tmp_path / "many.h5"
    g = torch.Generator().manual_seed(1)
    with FusionH5Writer(path, max_dn=1.0) as w:
        for _ in range(n // 500):
            w.append(gt=torch.rand(500, c, size, size, generator=g), ms=torch.rand(500, c, 4, 4, generator=g),
                     lms=torch.rand(500, c, size, size, generator=g), pan=torch.rand(500, 1, size, size, generator=g))
    reads: list[tuple[str, int]] = []
    original = h5py.Dataset.__getitem__

    def spy(self, args, *rest, **kw):
        out = original(self, args, *rest, **kw)
        reads.append((self.name, np.asarray(out).nbytes))
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    ds = PanCollectionH5(path, 1.0)
    item_bytes = {"/gt": c * size * size * 4, "/lms": c * size * size * 4, "/pan": size * size * 4, "/ms": c * 16 * 4}
    items = [(name, nbytes) for name, nbytes in reads if nbytes > c * 4]
    assert sorted({name for name, _ in items}) == ["/lms", "/pan"] and len(items) == 16   # 8 items each
    assert all(nbytes == item_bytes[name] for name, nbytes in items)
    assert all(nbytes <= c * 4 for name, nbytes in reads if (name, nbytes) not in items)  # else 1x1 corners
    reads.clear()
    for i in range(0, n, 7):
        ds[i]
    assert len(reads) == 4 * len(range(0, n, 7))
    assert all(nbytes == item_bytes[name] for name, nbytes in reads)


def test_dataloader_workers_open_their_own_handle(gf2_file):
    path, images = gf2_file
    ds = PanCollectionH5(path, "gf2")
    ds[0]                                                                # parent opens a handle first
    assert ds._file is not None
    clone = pickle.loads(pickle.dumps(ds))                               # no handle travels in a pickle
    assert clone._file is None
    torch.testing.assert_close(clone[3]["gt"], images["gt"][3], rtol=0, atol=1e-6)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    got = torch.cat([b["lms"] for b in batches])
    torch.testing.assert_close(got, images["lms"], rtol=0, atol=1e-6)
    ds.close()


def test_augmentation_same_transform_on_every_key(gf2_file):
    path, _ = gf2_file
    plain = PanCollectionH5(path, "gf2")
    aug = PanCollectionH5(path, "gf2", train=True, augment=RandomDihedral(generator=torch.Generator().manual_seed(0)))
    assert plain.augment is None
    assert PanCollectionH5(path, "gf2", augment=True).augment is not None
    seen = set()
    for trial in range(40):
        i = trial % len(plain)
        ref, out = plain[i], aug[i]
        matches = [(k, f) for k in range(4) for f in (False, True)
                   if all(torch.equal(dihedral(ref[key], k, f), out[key]) for key in ref)]
        assert len(matches) == 1, "one and the same flip/rotation must explain every key"
        seen.add(matches[0])
    assert len(seen) == 8                                                # the whole dihedral group is drawn


def test_requiring_gt_and_augmenting_are_independent(gf2_file, tmp_path):
    """``train=True`` only requires ground truth (the trainer augments); augmentation is off unless
    asked for, whatever ``require_gt`` / ``train`` say."""
    path, _ = gf2_file
    for kw in ({}, {"train": True}, {"require_gt": True}, {"augment": False}, {"augment": None}):
        ds = PanCollectionH5(path, "gf2", **kw)
        assert ds.augment is None, kw
        assert ds.require_gt == ds.train == bool(kw.get("train") or kw.get("require_gt")), kw
        assert torch.equal(ds[1]["lms"], ds.read(1)["lms"])
    assert isinstance(PanCollectionH5(path, "gf2", augment=True).augment, RandomDihedral)
    assert isinstance(open_h5(path, "gf2", train=True, augment=True).augment, RandomDihedral)
    def own(sample):
        return sample

    assert PanCollectionH5(path, "gf2", require_gt=True, augment=own).augment is own
    with pytest.raises(ValueError, match="augment must be"):
        PanCollectionH5(path, "gf2", augment="yes")
    images = _images(n=2)
    del images["gt"]
    full = write_pancollection_h5(tmp_path / "full.h5", max_dn=2047, **images)
    assert open_h5(full, 2047).augment is None
    for kw in ({"train": True}, {"require_gt": True}):
        with pytest.raises(ValueError, match="ground truth is required"):
            open_h5(full, 2047, **kw)


def test_augmentation_keeps_non_square_images_batchable():
    sample = {"lms": torch.rand(2, 8, 12), "ms": torch.rand(2, 2, 3)}
    aug = RandomDihedral(generator=torch.Generator().manual_seed(0))
    for _ in range(20):
        out = aug(sample)
        assert out["lms"].shape == (2, 8, 12) and out["ms"].shape == (2, 2, 3)


# --------------------------------------------------------------------------------------------
# bad files
# --------------------------------------------------------------------------------------------

def _write_raw(path, **datasets):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return path


def _raw(n=2, c=4, size=16, ratio=4, guide=1, max_dn=1023):
    """Raw datasets in digital numbers (GaoFen-2: max DN 1023), as the files store them."""
    return {"gt": max_dn * np.random.rand(n, c, size, size),
            "ms": max_dn * np.random.rand(n, c, size // ratio, size // ratio),
            "lms": max_dn * np.random.rand(n, c, size, size), "pan": max_dn * np.random.rand(n, guide, size, size)}


def test_file_scaled_to_unit_range_instead_of_dn_is_refused(tmp_path):
    """A PanCollection file must hold DN: one whose images were already divided to [0, 1] would be
    divided by max DN again and fused as almost-black images. Refused, naming the file, the
    dataset and what to do; the same data in DN opens."""
    d = _raw()
    unit = {k: v / 1023 for k, v in d.items()}
    with pytest.raises(ValueError, match=r"unit\.h5: 'lms' does not hold digital numbers for max_dn=1023: the "
                                         r"largest valid value is 0\.99"):
        PanCollectionH5(_write_raw(tmp_path / "unit.h5", **unit), "gf2")
    assert len(PanCollectionH5(_write_raw(tmp_path / "dn.h5", **d), "gf2")) == 2
    over = dict(d, pan=d["pan"] * 2.5)                                  # 12-bit values for a 10-bit model
    with pytest.raises(ValueError, match=r"'pan' does not hold digital numbers.*exceed the model's max DN 1023"):
        PanCollectionH5(_write_raw(tmp_path / "over.h5", **over), "gf2")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        PanCollectionH5(tmp_path / "nope.h5", "gf2")


def test_truncated_file(gf2_file, tmp_path):
    path, _ = gf2_file
    data = path.read_bytes()
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.h5: not a readable HDF5 file.*truncated"):
        PanCollectionH5(bad, "gf2")


def test_garbage_bytes(tmp_path):
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match=r"garbage\.h5: not a readable HDF5 file"):
        PanCollectionH5(bad, "gf2")


def test_corrupt_chunk_fails_on_read_naming_item(tmp_path):
    path = write_pancollection_h5(tmp_path / "zipped.h5", max_dn=1023, compression="gzip", **_images(n=3))
    with h5py.File(path) as f:
        info = f["lms"].id.get_chunk_info(0)                            # item 0's compressed chunk
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    ds = PanCollectionH5(path, "gf2")                                    # header and last item are fine
    ds[2]
    with pytest.raises(ValueError, match=r"zipped\.h5: cannot read item 0 of 'lms'"):
        ds[0]


@pytest.mark.parametrize("case, message", [
    ("missing_key", r"missing dataset\(s\) \['pan'\]"),
    ("wrong_bands", r"'gt' has 3 bands, expected 4"),
    ("wrong_pan_bands", r"'pan' has 3 bands, expected 1"),
    ("wrong_ratio", r"ratio 2, expected 4"),
    ("not_integer_ratio", r"not 16x16 divided by one integer ratio"),
    ("pan_size", r"'pan' is 12x12 but 'lms' is 16x16"),
    ("rank", r"'ms' has rank 3"),
    ("dtype", r"'lms' has non-numeric dtype"),
    ("count", r"different numbers of items"),
    ("empty", r"no items"),
    ("group", r"'gt' is a Group"),
    ("max_dn_attr", r"max_dn=2047.*divided by 1023"),
])
def test_bad_layouts(tmp_path, case, message):
    d = _raw()
    if case == "missing_key":
        del d["pan"]
    elif case == "wrong_bands":
        d["gt"] = d["gt"][:, :3]
    elif case == "wrong_pan_bands":
        d["pan"] = np.random.rand(2, 3, 16, 16)
    elif case == "wrong_ratio":
        d["ms"] = np.random.rand(2, 4, 8, 8)
    elif case == "not_integer_ratio":
        d["ms"] = np.random.rand(2, 4, 5, 5)
    elif case == "pan_size":
        d["pan"] = np.random.rand(2, 1, 12, 12)
    elif case == "rank":
        d["ms"] = d["ms"][:, 0]
    elif case == "dtype":
        d["lms"] = np.full((2, 4, 16, 16), b"x", dtype="S1")
    elif case == "count":
        d["gt"] = d["gt"][:1]
    elif case == "empty":
        d = {k: v[:0] for k, v in d.items()}
    path = tmp_path / f"{case}.h5"
    if case == "group":
        del d["gt"]
        _write_raw(path, **d)
        with h5py.File(path, "a") as f:
            f.create_group("gt")
    else:
        _write_raw(path, **d)
    if case == "max_dn_attr":
        with h5py.File(path, "a") as f:
            f.attrs["max_dn"] = 2047.0
    with pytest.raises(ValueError, match=rf"{case}\.h5: .*{message}"):
        PanCollectionH5(path, "gf2")


def test_non_finite_item(tmp_path):
    d = _raw()
    d["lms"][1, 0, 3, 3] = np.nan
    ds = PanCollectionH5(_write_raw(tmp_path / "nan.h5", **d), "gf2")
    ds[0]
    with pytest.raises(ValueError, match=r"nan\.h5: item 1 of 'lms' contains NaN"):
        ds[1]


def test_bad_preset_or_max_dn(gf2_file):
    path, _ = gf2_file
    for bad in (0, -1.0, float("nan"), None, True):
        with pytest.raises(ValueError, match="max"):
            PanCollectionH5(path, bad)
    with pytest.raises(ValueError, match="unknown preset"):
        PanCollectionH5(path, "wv9")


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------

def test_writer_is_atomic_and_validates(tmp_path):
    target = tmp_path / "out.h5"
    images = _images(n=2)
    with pytest.raises(RuntimeError, match="boom"):
        with FusionH5Writer(target, max_dn=1.0) as w:
            w.append(**images)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []                                 # no file, no temporary left
    with pytest.raises(ValueError, match="nothing was appended"):
        with FusionH5Writer(target, max_dn=1.0):
            pass
    assert list(tmp_path.iterdir()) == []
    bad = dict(images)
    bad["pan"] = torch.rand(2, 1, 12, 12)
    with pytest.raises(ValueError, match="pan: spatial size 12x12 differs"):
        write_pancollection_h5(target, max_dn=1.0, **bad)
    bad = dict(images)
    bad["gt"] = images["gt"].clone()
    bad["gt"][0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="gt: contains NaN or Inf"):
        write_pancollection_h5(target, max_dn=1.0, **bad)
    with pytest.raises(ValueError, match="floating-point"):
        write_pancollection_h5(target, max_dn=1.0, **{**images, "ms": (images["ms"] * 100).long()})
    with FusionH5Writer(target, max_dn=1.0) as w:
        w.append(**{k: v[0] for k, v in images.items()}, extra={"coords": np.array([[3, 4]])})   # unbatched item
        w.append(**{k: v[1:] for k, v in images.items()}, extra={"coords": np.array([[5, 6]])})
        with pytest.raises(ValueError, match="differ from the first"):
            w.append(ms=images["ms"], lms=images["lms"], pan=images["pan"], extra={"coords": np.zeros((2, 2))})
    info = inspect_h5(target)
    assert info.length == 2 and info.has_gt
    with h5py.File(target) as f:
        np.testing.assert_array_equal(f["coords"][...], [[3, 4], [5, 6]])
