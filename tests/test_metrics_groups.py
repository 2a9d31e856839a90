"""Group metrics on hand-computed examples."""
import math

import pytest
import torch

from xai_robust import metrics


def test_group_accuracies_by_hand():
    pred = torch.tensor([0, 1, 1, 0, 1, 1])
    y = torch.tensor([0, 1, 0, 0, 1, 0])
    g = torch.tensor([0, 1, 2, 2, 3, 3])
    acc = metrics.group_accuracies(pred, y, g)
    assert acc.tolist() == [1.0, 1.0, 0.5, 0.5]
    assert metrics.worst_group_accuracy(pred, y, g) == 0.5
    assert metrics.mean_accuracy(pred, y) == pytest.approx(4 / 6)


def test_empty_group_is_nan_and_ignored():
    acc = metrics.group_accuracies(torch.tensor([1, 0]), torch.tensor([1, 1]), torch.tensor([0, 2]), n_groups=4)
    assert acc[0] == 1 and acc[2] == 0 and math.isnan(acc[1]) and math.isnan(acc[3])
    assert metrics.worst_group_accuracy(torch.tensor([1, 0]), torch.tensor([1, 1]), torch.tensor([0, 2])) == 0.0


def test_weighted_mean_uses_train_proportions():
    pred = torch.tensor([0, 0, 1, 1])
    y = torch.tensor([0, 1, 1, 1])
    g = torch.tensor([0, 0, 1, 1])       # group 0: 50 %, group 1: 100 %
    train_groups = torch.tensor([0] * 9 + [1])  # 90 % / 10 % in training
    assert metrics.weighted_mean_accuracy(pred, y, g, train_groups) == pytest.approx(0.9 * 0.5 + 0.1 * 1.0)


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        metrics.group_accuracies(torch.tensor([0, 1]), torch.tensor([0]), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="argmax"):
        metrics.group_accuracies(torch.rand(3), torch.tensor([0, 1, 0]), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="empty"):
        metrics.worst_group_accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long),
                                     torch.tensor([], dtype=torch.long))


def test_group_ids_beyond_n_groups_raise_instead_of_being_dropped():
    import pytest
    import torch

    from xai_robust import metrics

    pred, y, groups = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="n_groups"):
        metrics.group_accuracies(pred, y, groups, n_groups=2)
    with pytest.raises(ValueError, match="n_groups"):
        metrics.group_counts(groups, n_groups=2)
    assert len(metrics.group_accuracies(pred, y, groups, n_groups=4)) == 4
