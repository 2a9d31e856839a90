"""Data-parallel training and extraction under torchrun (issue 17): two CPU processes (gloo) against one.

One script runs twice: as a plain process (the reference) and under ``torchrun --nproc_per_node 2``. Each process
saves what it trained and extracted; the test compares the ranks with each other and with the single process.
"""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from xai_robust import distributed

SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path

    import torch
    import torch.nn.functional as F
    from torch import nn

    from xai_robust import cluster, distributed, isnet, train
    from xai_robust.data.base import SampleDataset

    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    rank, world = distributed.rank(), distributed.world_size()  # initialises the process group under torchrun

    saves = []
    original_save = train.save_verified

    def counting_save(obj, path):
        saves.append(Path(path).name)
        original_save(obj, path)

    train.save_verified = counting_save

    def tiny_cnn(k=3, bn=False, seed=0):
        torch.manual_seed(seed)
        layers = [nn.Conv2d(1, 4, 3, padding=1)] + ([nn.BatchNorm2d(4)] if bn else [])
        layers += [nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, k)]
        return nn.Sequential(*layers)

    g = torch.Generator().manual_seed(0)
    n = 22  # batch_size 7: global batches 7, 7, 7, 1 -> shards 4/3 and, for the last, 1/0
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    masks = torch.zeros(n, 1, 8, 8)
    masks[:, :, 2:6, 2:6] = 1
    ds = SampleDataset(x, y, torch.zeros(n, dtype=torch.long), masks=masks, class_names=["a", "b", "c"],
                       group_names=["all"], name="distributed test")
    kw = dict(epochs=2, lr=1e-2, batch_size=7, seed=1, progress_bar=False)
    res = {"rank": rank, "world": world}

    def state(model):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    ce = train.fit(tiny_cnn(), ds, **kw)
    res["ce"], res["ce_history"] = state(ce), ce.fit_history

    seen = []

    def recording_ce(model, batch):
        seen.append(batch["index"].tolist())
        logits = model(batch["image"])
        return F.cross_entropy(logits, batch["label"]), logits, {"mean_logit": float(logits.detach().mean())}

    rec = train.fit(tiny_cnn(), ds, loss_fn=recording_ce, loss_config={"recording": 1}, clip_norm=0.5, **kw)
    res["rec"], res["rec_history"], res["seen"] = state(rec), rec.fit_history, list(seen)

    again = train.fit(tiny_cnn(), ds, **kw)  # a cache hit: rank 0 reads it, every rank gets its weights
    res["again"], res["again_history"] = state(again), again.fit_history
    seen.clear()
    train.fit(tiny_cnn(), ds, loss_fn=recording_ce, loss_config={"recording": 1}, clip_norm=0.5, **kw)
    res["seen_on_hit"] = list(seen)

    # BatchNorm: lr 0 leaves the weights, so the running statistics alone show how the ranks' updates combine
    bn0 = train.fit(tiny_cnn(bn=True), ds, **{**kw, "lr": 0.0})
    res["bn0"] = state(bn0)
    bn = train.fit(tiny_cnn(bn=True), ds, optimizer="sgd", **kw)
    res["bn"] = state(bn)

    ikw = dict(epochs=2, lr=3e-3, P=isnet.warmup(0.7, 0.3), ranges=(0.5, 20.0), batch_size=8, seed=2, cache=False,
               progress=False)
    res["selective"] = state(isnet.fit(tiny_cnn(), ds, variant="selective", **ikw))
    stochastic = isnet.fit(tiny_cnn(), ds, variant="stochastic", **ikw)
    res["stochastic"], res["stochastic_history"] = state(stochastic), stochastic.isnet_history

    def nan_on_last_rank(model, batch):  # one rank's loss turns NaN: every rank raises, none hangs
        logits = model(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        return (loss * float("nan") if rank == world - 1 else loss), logits

    try:
        train.fit(tiny_cnn(), ds, loss_fn=nan_on_last_rank, loss_config={"nan": 1}, cache=False,
                  **kw)
        res["nan"] = "no error"
    except FloatingPointError as err:
        res["nan"] = str(err)

    frozen = tiny_cnn(seed=5).eval()  # the same weights in every run: extraction alone is compared
    res["embed"] = train.embed(frozen, x, batch_size=4)
    res["embed_one"] = train.embed(frozen, x[:1])  # fewer images than ranks: rank 1 embeds nothing
    res["heatmaps"] = cluster.heatmap_representations(frozen, x, batch_size=4, progress=False)
    res["heatmaps_labels"] = cluster.heatmap_representations(frozen, ds, target=y, size=4, batch_size=3,
                                                             progress=False)
    strided = torch.arange(n)[rank::world]
    res["gather_index"] = distributed.gather(strided.float() * 10, index=strided)
    res["saves"] = saves
    torch.save(res, out / f"rank{rank}.pt")
    distributed.barrier()
''')


def _run(cmd, tmp_path, cache):
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", XAI_ROBUST_CACHE=str(cache), XAI_ROBUST_PROGRESS="0", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The script's outputs: ``single`` (one plain process) and ``ranks`` (rank 0 and 1 under torchrun)."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    single_out, dist_out = tmp_path / "single", tmp_path / "dist"
    single_out.mkdir()
    dist_out.mkdir()
    _run([sys.executable, script, single_out], tmp_path, tmp_path / "cache_single")
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, dist_out],
         tmp_path, tmp_path / "cache_dist")
    load = lambda path: torch.load(path, weights_only=False)  # noqa: E731
    return {"single": load(single_out / "rank0.pt"), "ranks": [load(dist_out / f"rank{r}.pt") for r in (0, 1)],
            "checkpoints": {name: sorted(p.name for p in (tmp_path / name / "checkpoints").glob("*.pt"))
                            for name in ("cache_single", "cache_dist")}}


def _assert_states(a, b, **tol):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=lambda m, key=key: f"{key}: {m}", **tol)


EXACT = dict(rtol=0, atol=0)
CLOSE = dict(rtol=1e-4, atol=1e-5)


def test_launch_is_detected(runs):
    single, (r0, r1) = runs["single"], runs["ranks"]
    assert (single["rank"], single["world"]) == (0, 1)
    assert (r0["rank"], r0["world"], r1["rank"], r1["world"]) == (0, 2, 1, 2)
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()


@pytest.mark.parametrize("key", ["ce", "rec", "again", "bn0", "bn", "selective", "stochastic"])
def test_every_rank_ends_with_identical_weights(runs, key):
    _assert_states(runs["ranks"][0][key], runs["ranks"][1][key], **EXACT)


def _nan_equal(history):  # NaN (the ISNet's lrp part while the warm-up's P is 0) compares equal to NaN
    return [{k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in epoch.items()} for epoch in history]


def test_histories_are_identical_across_ranks(runs):
    r0, r1 = runs["ranks"]
    for key in ("ce_history", "rec_history", "again_history", "stochastic_history"):
        assert _nan_equal(r0[key]) == _nan_equal(r1[key]), key
    assert r0["again_history"] == r0["ce_history"]  # the cache hit brings the history along


@pytest.mark.parametrize("key", ["ce", "rec", "selective"])
def test_weights_equal_a_single_process_run_with_the_same_global_batch(runs, key):
    """Cross-entropy, a loss_fn with clipping, and the (deterministic) Selective ISNet through isnet.fit."""
    _assert_states(runs["ranks"][0][key], runs["single"][key], **CLOSE)


def test_history_equals_the_single_process_one(runs):
    for key in ("ce_history", "rec_history"):
        single, dist = runs["single"][key], runs["ranks"][0][key]
        assert len(single) == len(dist) == 2
        for a, b in zip(single, dist, strict=True):
            assert a.keys() == b.keys()
            for name in a:
                assert a[name] == pytest.approx(b[name], rel=1e-5, abs=1e-6), (key, name)


def test_each_rank_sees_a_disjoint_shard_of_every_global_batch(runs):
    single, r0, r1 = runs["single"]["seen"], runs["ranks"][0]["seen"], runs["ranks"][1]["seen"]
    # epochs of 22 samples in global batches of 7: four steps per epoch, the last one a single sample
    assert [len(b) for b in single] == [7, 7, 7, 1] * 2
    assert len(r0) == 8 and len(r1) == 6  # rank 1 has no sample in each epoch's last step (no loss_fn call)
    r1 = r1[:3] + [[]] + r1[3:] + [[]]  # aligned with the global steps
    for step, (whole, a, b) in enumerate(zip(single, r0, r1, strict=True)):
        assert not set(a) & set(b), step
        assert a + b == whole, step  # contiguous parts of the single-process batch, in its order
        assert len(a) - len(b) in (0, 1), step
    for epoch in (slice(0, 4), slice(4, 8)):  # within an epoch the ranks' samples are disjoint and cover the data
        samples = [i for rank in (r0, r1) for batch in rank[epoch] for i in batch]
        assert sorted(samples) == list(range(22))


def test_rank_zero_alone_writes_the_checkpoints(runs):
    r0, r1 = runs["ranks"]
    assert r1["saves"] == []
    assert len(r0["saves"]) == 4 and len(set(r0["saves"])) == 4  # ce, recording, bn0, bn; the cache hits write none
    assert runs["checkpoints"]["cache_dist"] == sorted(r0["saves"])
    assert r0["seen_on_hit"] == r1["seen_on_hit"] == []  # loaded from rank 0's checkpoint, not retrained
    # a distributed checkpoint is keyed apart from the single-process one
    assert len(runs["checkpoints"]["cache_single"]) == 4
    assert not set(runs["checkpoints"]["cache_single"]) & set(runs["checkpoints"]["cache_dist"])


def test_batchnorm_running_mean_combines_the_shards(runs):
    """With lr 0 the weights stay; the share-weighted mean of the shards' updates is the global batch's mean."""
    dist, single = runs["ranks"][0]["bn0"], runs["single"]["bn0"]
    _assert_states({k: v for k, v in dist.items() if not k.endswith("running_var")},
                   {k: v for k, v in single.items() if not k.endswith("running_var")}, **CLOSE)
    assert int(dist["1.num_batches_tracked"]) == 8


def test_stochastic_isnet_draws_keep_the_ranks_in_step(runs):
    """Each rank draws its shard's classes from a generator of its own; the ranks stay identical (above) and the
    run is a real training run, not the single-process one (its draws differ)."""
    r0, single = runs["ranks"][0], runs["single"]
    assert len(r0["stochastic_history"]) == 2 and "lrp" in r0["stochastic_history"][0]
    assert all(torch.isfinite(v).all() for v in r0["stochastic"].values())
    assert any(not torch.equal(r0["stochastic"][k], single["stochastic"][k]) for k in r0["stochastic"])


def test_a_non_finite_loss_on_one_rank_stops_every_rank(runs):
    for res in (runs["single"], *runs["ranks"]):
        assert res["nan"].startswith("the training loss became nan at step 0"), res["nan"]


@pytest.mark.parametrize("key", ["embed", "embed_one", "heatmaps", "heatmaps_labels", "gather_index"])
def test_extraction_returns_the_full_ordered_result_on_every_rank(runs, key):
    r0, r1, single = runs["ranks"][0][key], runs["ranks"][1][key], runs["single"][key]
    assert r0.shape == single.shape
    torch.testing.assert_close(r0, r1, **EXACT)
    torch.testing.assert_close(r0, single, **CLOSE)
