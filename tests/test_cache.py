"""The verified, atomic cache shared by training and ISNet checkpoints."""
import torch

from xai_robust import cache, models


def test_roundtrip_and_corruption(tmp_path):
    path = tmp_path / "sub" / "x.pt"
    assert cache.load_verified(path) is None
    obj = {"state": {"w": torch.arange(5.0)}, "history": [1.0, 0.5]}
    cache.save_verified(obj, path)
    back = cache.load_verified(path)
    assert torch.equal(back["state"]["w"], obj["state"]["w"]) and back["history"] == [1.0, 0.5]
    assert not list(tmp_path.glob("sub/*.tmp*"))  # no temporary file left behind
    raw = path.read_bytes()
    path.write_bytes(raw[:-3])  # truncated
    assert cache.load_verified(path) is None
    path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # one flipped bit
    assert cache.load_verified(path) is None


def test_hashes_are_stable_and_sensitive():
    assert cache.config_hash({"a": 1, "b": 2}) == cache.config_hash({"b": 2, "a": 1})
    assert cache.config_hash({"a": 1}) != cache.config_hash({"a": 2})
    m1, m2 = models.build("conv2net", 2, seed=0), models.build("conv2net", 2, seed=0)
    assert cache.state_digest(m1) == cache.state_digest(m2)
    with torch.no_grad():
        m2.fc.weight[0, 0] += 1e-6
    assert cache.state_digest(m1) != cache.state_digest(m2)


def test_content_digest_counts_every_byte_dtype_and_shape():
    x = torch.rand(300, 3, 8, 8)
    d = cache.content_digest(x)
    y = x.clone()
    y[1::2] = y[1::2].flip(-1)  # odd-indexed images mirrored (a sampled fingerprint would miss this)
    assert cache.content_digest(y) != d
    assert cache.content_digest(x.double()) != d and cache.content_digest(x.reshape(300, 192)) != d
    assert cache.content_digest(x.clone()) == d
    assert cache.content_digest({"a": 1, "b": [x]}) == cache.content_digest({"b": [x], "a": 1})
    assert cache.content_digest(torch.zeros(0)) != cache.content_digest(torch.zeros(0, dtype=torch.long))


def test_dataset_fingerprint_sees_every_image_label_and_mask():
    from xai_robust.data import SampleDataset

    def ds(images, labels, masks):
        return SampleDataset(images, labels, labels, class_names=["a", "b"], group_names=["a", "b"], masks=masks)

    x, y, m = torch.rand(600, 1, 8, 8), torch.randint(0, 2, (600,)), (torch.rand(600, 1, 8, 8) > 0.5).float()
    base = ds(x, y, m).fingerprint()
    mirrored = x.clone()
    mirrored[1::2] = mirrored[1::2].flip(-1)
    assert ds(mirrored, y, m).fingerprint() != base
    assert ds(x, 1 - y, m).fingerprint() != base
    assert ds(x, y, 1 - m).fingerprint() != base
    assert ds(x.clone(), y.clone(), m.clone()).fingerprint() == base


def test_concurrent_threads_writing_one_key(tmp_path):
    """Threads of one process writing the same key never collide on the temporary file."""
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "k.pt"
    objs = [{"w": torch.full((1000,), float(i))} for i in range(3)]

    def write(i):
        cache.save_verified(objs[i % 3], path)
        return True

    with ThreadPoolExecutor(3) as pool:
        assert all(pool.map(write, range(90)))
    back = cache.load_verified(path)
    assert back is not None and any(torch.equal(back["w"], o["w"]) for o in objs)
    assert not list(tmp_path.glob("*.tmp"))


def test_segment_disk_cache_is_verified(tmp_path, monkeypatch):
    from xai_robust import superpixels

    monkeypatch.setenv("XAI_ROBUST_CACHE", str(tmp_path))
    superpixels._MEMORY_CACHE.clear()
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    first = superpixels.segment(x, "slic", n_segments=10, cache="disk")
    (path,) = list((tmp_path / "segments").glob("*.pt"))
    raw = bytearray(path.read_bytes())
    raw[-20] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(raw))
    superpixels._MEMORY_CACHE.clear()
    again = superpixels.segment(x, "slic", n_segments=10, cache="disk")
    assert torch.equal(first, again)  # recomputed, not read from the corrupt file
    assert cache.load_verified(path) is not None  # and rewritten


def test_isnet_cache_keys_on_masks_and_labels_of_a_tuple(tmp_path, monkeypatch):
    from xai_robust import isnet

    monkeypatch.setenv("XAI_ROBUST_CACHE", str(tmp_path))
    x = torch.rand(32, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(1))
    m = torch.zeros(32, 1, 12, 12)
    m[:, :, 3:9, 3:9] = 1
    kw = dict(variant="selective", epochs=1, lr=1e-3, ranges=(0.1, 10.0), batch_size=16, progress=False)
    for data in ((x, y, m), (x, y, 1 - m), (x, 1 - y, m)):
        isnet.fit(models.build("conv2net", 2, in_channels=1, seed=0), data, **kw)
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 3  # three keys, never a stale checkpoint
