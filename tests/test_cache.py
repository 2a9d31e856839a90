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
