"""Tests for xai_robust.dfr (DFR and JTT, chapter 04).

References: scikit-learn StandardScaler + L1 LogisticRegression fits done by hand, and a synthetic
embedding problem with a spurious dimension.
"""
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from xai_robust import cluster, dfr


def spurious_embeddings(n, correlation, seed):
    """Dim 0: noisy core feature (= label); dim 1: clean spurious feature (= attribute); dims 2..: noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < correlation, y, 1 - y)
    x = np.concatenate([(2 * y - 1)[:, None] * 1.0 + 0.8 * rng.standard_normal((n, 1)),
                        (2 * a - 1)[:, None] * 2.0 + 0.2 * rng.standard_normal((n, 1)),
                        rng.standard_normal((n, 6))], axis=1)
    return x, y, 2 * y + a


def worst(pred, y, g):
    return min((pred[g == k] == y[g == k]).mean() for k in np.unique(g))


def test_dfr_beats_erm_worst_group_on_spurious_embeddings():
    x_tr, y_tr, _ = spurious_embeddings(2000, 0.97, 0)
    x_val, y_val, g_val = spurious_embeddings(600, 0.5, 1)
    x_te, y_te, g_te = spurious_embeddings(2000, 0.5, 2)
    erm = LogisticRegression().fit(x_tr, y_tr)
    erm_worst = worst(erm.predict(x_te), y_te, g_te)
    model = dfr.DFR(n_tune_splits=2, n_refits=5).fit(torch.from_numpy(x_val).float(), torch.from_numpy(y_val),
                                                     torch.from_numpy(g_val))
    dfr_worst = worst(model.predict(x_te).numpy(), y_te, g_te)
    assert erm_worst < 0.5 and dfr_worst > erm_worst + 0.2
    # pseudo groups from the embeddings themselves (GEORGE-style) also help here
    pg = cluster.pseudo_groups(x_val, y_val, method="kmeans", k=2, scope="local")
    pseudo = dfr.DFR(n_tune_splits=2, n_refits=5).fit(x_val, y_val, pg)
    assert worst(pseudo.predict(x_te).numpy(), y_te, g_te) > erm_worst + 0.2


def _hand_dfr(x, y, g, c_grid, n_splits, n_refits, seed, min_size=5):
    """DFR written out with scikit-learn calls, consuming the random generator in the same order."""
    def subsample(groups, rng):
        ids, counts = np.unique(groups, return_counts=True)
        budget = counts[counts > min_size].min()
        return np.concatenate([rng.permutation(np.flatnonzero(groups == k))[:budget] for k in ids])

    rng = np.random.default_rng(seed)
    scores = {c: 0.0 for c in c_grid}
    for _ in range(n_splits):
        perm = rng.permutation(len(x))
        tr, te = perm[len(x) // 2:], perm[:len(x) // 2]
        sub = tr[subsample(g[tr], rng)]
        sc = StandardScaler().fit(x[sub])
        for c in c_grid:
            lr = LogisticRegression(C=c, l1_ratio=1, solver="liblinear").fit(sc.transform(x[sub]), y[sub])
            scores[c] += worst(lr.predict(sc.transform(x[te])), y[te], g[te]) / n_splits
    best = max(c_grid, key=lambda c: scores[c])
    sc = StandardScaler().fit(x)
    rng = np.random.default_rng(seed + 1)
    fits = [LogisticRegression(C=best, l1_ratio=1, solver="liblinear").fit(sc.transform(x[s]), y[s])
            for s in (subsample(g, rng) for _ in range(n_refits))]
    coef = np.mean([f.coef_ for f in fits], axis=0)
    intercept = np.mean([f.intercept_ for f in fits], axis=0)
    return scores, best, coef, intercept, sc


def test_dfr_tuning_and_averaging_agree_with_sklearn_by_hand():
    x, y, g = spurious_embeddings(240, 0.7, 5)
    grid = (1.0, 0.1, 0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FutureWarning from a deprecated penalty= spelling
        model = dfr.DFR(grid, n_tune_splits=3, n_refits=4, seed=7).fit(x, y, g)
    scores, best, coef, intercept, sc = _hand_dfr(x, y, g, grid, 3, 4, seed=7)
    assert model.tune_scores_ == pytest.approx(scores)
    assert model.best_c_ == best
    np.testing.assert_allclose(model.coef_, coef, rtol=1e-4, atol=1e-6)  # liblinear tol/shuffling
    np.testing.assert_allclose(model.intercept_, intercept, rtol=1e-4, atol=1e-6)
    ref_pred = ((sc.transform(x) @ coef.T + intercept).ravel() > 0).astype(int)
    np.testing.assert_array_equal(model.predict(x).numpy(), ref_pred)
    # the folded nn.Linear gives the same decisions on raw embeddings
    lin = model.to_linear()
    with torch.no_grad():
        logits = lin(torch.from_numpy(x).float())
    np.testing.assert_array_equal(logits.argmax(1).numpy(), ref_pred)


def test_dfr_fixed_c_and_multiclass():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    x = np.eye(3)[y] * 3 + rng.standard_normal((120, 3))
    model = dfr.DFR(n_refits=2).fit(x, y, y, c=0.5)
    assert model.best_c_ == 0.5 and model.coef_.shape == (3, 3)
    assert (model.predict(x).numpy() == y).mean() > 0.9


def test_dfr_bad_input():
    x, y, g = spurious_embeddings(100, 0.5, 0)
    with pytest.raises(ValueError, match="single class"):
        dfr.DFR().fit(x, np.zeros(100, dtype=int), g)
    with pytest.raises(TypeError, match="integer"):
        dfr.DFR().fit(x, y, g.astype(float))
    with pytest.raises(ValueError, match="shape"):
        dfr.DFR().fit(x[:, 0], y, g)
    with pytest.raises(ValueError, match="c_grid"):
        dfr.DFR(c_grid=(1.0, -1.0))
    with pytest.raises(RuntimeError, match="fit"):
        dfr.DFR().predict(x)
    with pytest.warns(UserWarning, match="mixes several classes"):
        dfr.DFR(n_tune_splits=1, n_refits=1).fit(x, y, np.zeros(100, dtype=int) + (np.arange(100) % 2))


def test_balanced_subsample():
    g = np.array([0] * 50 + [1] * 10 + [2] * 3)
    idx = dfr.balanced_subsample(g, np.random.default_rng(0))
    counts = np.bincount(g[idx])
    assert counts.tolist() == [10, 10, 3]  # the 3-sample group is too small to set the budget
    assert len(np.unique(idx)) == len(idx)


def test_jtt_weights():
    pred = torch.tensor([0, 1, 1, 0])
    y = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(dfr.jtt_weights(pred, y, upweight=50), torch.tensor([1.0, 50.0, 1.0, 50.0]))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(dfr.jtt_weights(logits, y, upweight=20), torch.tensor([1.0, 20.0, 1.0, 20.0]))
    with pytest.raises(ValueError, match="upweight"):
        dfr.jtt_weights(pred, y, upweight=0.5)
    with pytest.raises(ValueError, match="shape"):
        dfr.jtt_weights(pred, y[:3])
    with pytest.raises(TypeError, match="class indices"):
        dfr.jtt_weights(pred.float(), y)


def test_jtt_selects_lambda_by_validation_worst_group():
    class Data:
        images = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        labels = torch.tensor([0, 0, 1, 1])

    seen = {}

    def fake_fit(model, dataset, *, epochs, lr, sample_weights, seed):
        seen[float(sample_weights.max())] = sample_weights.clone()
        model.lam = float(sample_weights.max())
        return model

    def fake_predict(model, x):
        if getattr(model, "lam", None) is None:  # identification model: wrong on samples 1 and 2
            return torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 1]), 2).float()
        good = model.lam == 50.0  # pretend lambda=50 fixes the minority group
        pred = torch.tensor([0, 1, 0, 1]) if good else torch.tensor([0, 0, 0, 0])
        return torch.nn.functional.one_hot(pred, 2).float()

    ident = torch.nn.Identity()
    model, info = dfr.jtt(lambda: torch.nn.Identity(), Data(), torch.zeros(4, 1), torch.tensor([0, 1, 0, 1]),
                          torch.tensor([0, 1, 2, 3]), identification_model=ident, upweights=(20.0, 50.0),
                          epochs=1, lr=0.1, fit=fake_fit, predict=fake_predict)
    assert info["upweight"] == 50.0 and info["error_set_size"] == 2
    assert info["val_worst"] == {20.0: 0.0, 50.0: 1.0}
    torch.testing.assert_close(seen[20.0], torch.tensor([1.0, 20.0, 20.0, 1.0]))
