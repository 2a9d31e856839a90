"""Unit tests for xai_robust.sca (FCR: Eq. 3–8, Algorithms 1–2; chapter 05)."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from xai_robust import sca


def _small_problem(seed=0, n=60, d_in=6, d=8, k=4):
    g = torch.Generator().manual_seed(seed)
    body = nn.Sequential(nn.Linear(d_in, d), nn.ReLU()).double()
    head = nn.Linear(d, k).double()
    with torch.no_grad():
        for p in list(body.parameters()) + list(head.parameters()):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    return body, head, x, y


# ---------------------------------------------------------------- Eq. 7 / Eq. 8 -------------------
def test_eq7_hand_computed_and_orthogonal():
    w = torch.tensor([1.0, 2.0, 3.0])
    f = sca.orthogonal_weight(w, 1)
    assert f == -(1.0 + 9.0 + 1.0) / 2.0  # -5.5, by hand
    n, n_new = torch.tensor([1.0, 2.0, 3.0, -1.0]), torch.tensor([1.0, f, 3.0, -1.0])
    assert float(n @ n_new) == 0.0  # normals (w, -1) orthogonal


def test_eq7_orthogonal_random_rows():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        w = torch.randn(17, generator=g, dtype=torch.float64)
        j = int(torch.randint(0, 17, (1,), generator=g))
        w2 = w.clone()
        w2[j] = sca.orthogonal_weight(w, j)
        n = torch.cat([w, torch.tensor([-1.0], dtype=torch.float64)])
        n2 = torch.cat([w2, torch.tensor([-1.0], dtype=torch.float64)])
        assert abs(float(n @ n2)) < 1e-9 * float(n.norm() * n2.norm())
        assert torch.equal((w2 - w) != 0, torch.arange(17) == j)


def test_eq8_interpolation_exact():
    w = [1.0, 2.0, 3.0]
    assert sca.orthogonal_weight(w, 1, rate=0.25) == 0.25 * -5.5 + 0.75 * 2.0  # 0.125
    assert sca.orthogonal_weight(w, 1, rate=0.0) == 2.0
    assert sca.orthogonal_weight(w, 1, rate=1.0) == -5.5
    assert sca.orthogonal_weight(w, 0, rate=0.5) == 0.5 * -(4.0 + 9.0 + 1.0) / 1.0 + 0.5 * 1.0


def test_zero_weight_is_handled_never_inf():
    w = torch.tensor([0.0, 2.0])
    with pytest.raises(ValueError, match=r"w_row\[0\] is 0"):
        sca.orthogonal_weight(w, 0)
    assert sca.orthogonal_weight(w, 0, rate=0.0) == 0.0
    # the selection skips zero weights, so remove_class never divides by zero
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.5], [1.0, 1.0]]))
    scores = torch.tensor([10.0, 1.0], dtype=torch.float64)
    assert sca.select_edges(scores, lin.weight[0], 1) == [1]
    feats = torch.tensor([[5.0, 1.0], [0.1, 0.2]])
    rec = sca.remove_class(lin, feats, torch.tensor([0, 1]), 0)
    assert rec.columns == [1] and torch.isfinite(lin.weight).all()


# ---------------------------------------------------------------- Eq. 3 / Eq. 4 -------------------
def test_closed_form_accumulations_equal_per_sample_autograd():
    body, head, x, y = _small_problem()
    feats = body(x).detach()
    acc = sca.accumulate(feats, y, head, batch_size=7)
    K, D = head.weight.shape
    ref_a = torch.zeros(K, D, dtype=torch.float64)
    ref_g = torch.zeros(K, K, D, dtype=torch.float64)
    for i in range(x.shape[0]):  # per-sample autograd through the whole model
        head.zero_grad()
        loss = F.cross_entropy(head(body(x[i:i + 1])), y[i:i + 1])
        loss.backward()
        ref_g[y[i]] += head.weight.grad.abs()
        ref_a[y[i]] += body(x[i:i + 1]).detach()[0]
    torch.testing.assert_close(acc.gradients, ref_g, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(acc.activations, ref_a, rtol=1e-10, atol=1e-12)
    assert acc.counts.tolist() == torch.bincount(y, minlength=K).double().tolist()


def test_streaming_over_dataloader_equals_tensor():
    body, head, x, y = _small_problem(seed=3)
    feats = body(x).detach()
    full = sca.accumulate(feats, y, head)
    loader = DataLoader(TensorDataset(feats, y), batch_size=9, shuffle=False)
    streamed = sca.accumulate(loader, None, head)
    torch.testing.assert_close(streamed.gradients, full.gradients)
    torch.testing.assert_close(streamed.activations, full.activations)


def test_entropy_and_ca_hand_computed():
    assert float(sca.entropy(torch.tensor([1.0, 1.0]))) == pytest.approx(math.log(2))
    assert float(sca.entropy(torch.tensor([3.0, 0.0]))) == 0.0
    assert float(sca.entropy(torch.tensor([0.0, 0.0]))) == 0.0
    acc = sca.Accumulations(activations=torch.tensor([[1.0], [3.0]], dtype=torch.float64),
                            gradients=torch.tensor([[[2.0], [1.0]], [[2.0], [1.0]]], dtype=torch.float64),
                            counts=torch.tensor([1.0, 1.0], dtype=torch.float64))
    h_a = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    expected = torch.tensor([[math.log(2) / h_a], [math.log(2) / h_a]], dtype=torch.float64)
    torch.testing.assert_close(sca.ca_scores(acc), expected)
    lin = nn.Linear(1, 2)
    # Eq. 6 for target 1: CA[1, 0] * G[1, 1, 0] * A[1, 0]
    s = sca.sca_scores(None, None, lin, 1, accumulations=acc)
    assert float(s[0]) == pytest.approx(math.log(2) / h_a * 1.0 * 3.0)


# ---------------------------------------------------------------- Algorithm 1 ---------------------
def _planted(seed=0, n_per=60, k=4, d=10, private=7, target=2):
    """Features with one strong shared feature (0) and one feature private to ``target``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(k).repeat_interleave(n_per)
    feats = 0.3 * torch.rand(len(y), d, generator=g)
    feats[:, 0] += 3.0 + torch.rand(len(y), generator=g)  # shared, large for every class
    for c in range(k):  # each class gets its own mildly informative feature
        feats[y == c, 1 + c] += 1.0
    feats[y == target, private] += 2.0 + torch.rand(n_per, generator=g)
    lin = nn.Linear(d, k)
    with torch.no_grad():
        lin.weight.copy_(0.2 * torch.randn(k, d, generator=g))
        lin.weight[:, 0] = 0.5
        for c in range(k):
            lin.weight[c, 1 + c] = 1.5
        lin.weight[target, private] = 1.5
        lin.bias.zero_()
    return feats, y, lin


def test_sca_selects_planted_private_feature():
    feats, y, lin = _planted()
    s = sca.sca_scores(feats, y, lin, 2)
    assert int(s.argmax()) == 7
    # the accumulative-only score is fooled by the strong shared feature: CA is what fixes it
    for score in ("activation", "accumulative"):
        assert int(sca.sca_scores(feats, y, lin, 2, score=score).argmax()) == 0


def test_single_weight_edit_changes_one_element_and_undo_is_bitwise():
    feats, y, lin = _planted()
    before = {k: v.clone() for k, v in lin.state_dict().items()}
    acc_before = (lin(feats).argmax(1) == y).float()
    rec = sca.remove_class(lin, feats, y, 2, rate=1.0)
    diff = (lin.weight != before["weight"])
    assert int(diff.sum()) == 1 and bool(diff[2, 7])
    assert torch.equal(lin.bias, before["bias"])
    pred = lin(feats).argmax(1)
    assert float((pred[y == 2] == 2).float().mean()) == 0.0  # class removed
    for c in (0, 1, 3):  # others untouched
        assert torch.equal((pred[y == c] == c).float(), acc_before[y == c])
    rec.undo()
    for k, v in lin.state_dict().items():
        assert torch.equal(v.view(torch.int32), before[k].view(torch.int32))
    rec.undo()  # second undo is a no-op
    assert torch.equal(lin.weight, before["weight"])


def test_multi_weight_edit_and_context_manager():
    feats, y, lin = _planted()
    w0 = lin.weight.clone()
    with sca.remove_class(lin, feats, y, 2, n_weights=3, rate=0.5) as rec:
        assert len(set(rec.columns)) == 3 and rec.rows == [2, 2, 2]
        assert int((lin.weight != w0).sum()) == 3
    assert torch.equal(lin.weight, w0)


# ---------------------------------------------------------------- Algorithm 2 ---------------------
def test_fictitious_removal_edits_real_row_from_head_selection():
    g = torch.Generator().manual_seed(0)
    sub = torch.arange(4).repeat_interleave(50)          # fictitious classes 0..3
    real = sub // 2                                      # real classes {0,1} -> 0, {2,3} -> 1
    feats = 0.2 * torch.rand(len(sub), 6, generator=g)
    feats[torch.arange(len(sub)), sub] += 2.0            # one private feature per sub-class
    feats[:, 5] += 1.0
    lin = nn.Linear(6, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0, -1.0, -1.0, 0.1, 0.2], [-1.0, -1.0, 1.0, 1.0, 0.1, 0.2]]))
        lin.bias.zero_()
    w0 = lin.weight.clone()
    head = sca.fit_fictitious_head(feats, sub)
    assert (head(feats).argmax(1) == sub).all()
    assert sca.fictitious_to_real(sub, real) == {0: 0, 1: 0, 2: 1, 3: 1}
    rec = sca.remove_fictitious_class(lin, feats, sub, 3, labels=real, head=head)
    assert rec.rows == [1] and rec.columns == [3] and rec.source_row == 3
    assert int((lin.weight != w0).sum()) == 1
    pred = lin(feats).argmax(1)
    assert float((pred[sub == 3] == 1).float().mean()) == 0.0     # sub-class 3 no longer class 1
    assert bool((pred[sub == 2] == 1).all())                       # sibling sub-class kept
    rec.undo()
    assert torch.equal(lin.weight, w0)


# ---------------------------------------------------------------- bad input -----------------------
def test_bad_inputs_raise_clear_errors():
    feats, y, lin = _planted()
    w0 = lin.weight.clone()
    with pytest.raises(TypeError, match="linear"):
        sca.sca_scores(feats, y, nn.Conv2d(1, 1, 1), 0)
    with pytest.raises(ValueError, match="features"):
        sca.sca_scores(feats[:, :3], y, lin, 0)
    with pytest.raises(ValueError, match="labels"):
        sca.sca_scores(feats, y + 10, lin, 0)
    with pytest.raises(ValueError, match="labels"):
        sca.sca_scores(feats, y[:5], lin, 0)
    with pytest.raises(TypeError, match="labels"):
        sca.sca_scores(feats, y.float(), lin, 0)
    with pytest.raises(ValueError, match="target"):
        sca.sca_scores(feats, y, lin, 9)
    with pytest.raises(ValueError, match="rate"):
        sca.remove_class(lin, feats, y, 0, rate=1.5)
    with pytest.raises(ValueError, match="score"):
        sca.sca_scores(feats, y, lin, 0, score="magic")
    with pytest.raises(ValueError, match="w_row"):
        sca.orthogonal_weight(torch.ones(2, 2), 0)
    with pytest.raises(ValueError, match="j"):
        sca.orthogonal_weight(torch.ones(3), 3)
    with pytest.raises(ValueError, match="n_weights"):
        sca.remove_class(lin, feats, y, 0, n_weights=0)
    with pytest.raises(ValueError, match="real_class"):
        sca.remove_fictitious_class(lin, feats, y, 0, head=nn.Linear(10, 4))
    assert torch.equal(lin.weight, w0)  # nothing edited by failed calls


def test_positive_edges_default_and_nonzero_option():
    w = torch.tensor([-3.0, 0.5, 0.0, 1.0])
    scores = torch.tensor([9.0, 1.0, 8.0, 2.0], dtype=torch.float64)
    assert sca.select_edges(scores, w, 2) == [3, 1]                      # only supporting (w > 0) edges
    assert sca.select_edges(scores, w, 2, edges="nonzero") == [0, 3]     # paper-literal, zero skipped
    with pytest.raises(ValueError, match="n_weights"):
        sca.select_edges(scores, w, 3)
    with pytest.raises(ValueError, match="edges"):
        sca.select_edges(scores, w, 1, edges="any")


def test_bad_features_absent_class_and_unrepresentable_edits_raise():
    import pytest
    import torch
    from torch import nn

    from xai_robust import sca

    lin = nn.Linear(3, 2)
    f, y = torch.rand(6, 3), torch.tensor([0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="does not occur in labels"):
        sca.remove_class(lin, f, y, 1)
    with pytest.raises(ValueError, match="NaN"):
        sca.remove_class(lin, torch.full((6, 3), float("nan")), y, 0)
    with pytest.raises(ValueError, match="empty"):
        sca.remove_class(lin, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 0)
    half = nn.Linear(3, 1).half()
    with torch.no_grad():
        half.weight.copy_(torch.tensor([[1e-3, 100.0, 100.0]]))
    before = half.weight.clone()
    with pytest.raises(ValueError, match="not representable"):
        sca.edit_weights(half, 0, [0])
    assert torch.equal(half.weight, before)  # nothing written


def test_remove_class_by_keyword_with_precomputed_accumulations():
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 3)
    feats, labels = torch.rand(30, 6), torch.arange(30) % 3
    acc = sca.accumulate(feats, labels, lin)
    positional = sca.remove_class(lin, None, None, 1, accumulations=acc)
    edited = lin.weight.detach().clone()
    positional.undo()
    with sca.remove_class(lin, target=1, accumulations=acc):
        torch.testing.assert_close(lin.weight.detach(), edited)
    with pytest.raises(TypeError, match="target="):
        sca.remove_class(lin, accumulations=acc)
    with pytest.raises(TypeError, match="features and labels"):
        sca.remove_class(lin, target=1)
