"""Masked losses: NaN = unknown label, which must change neither the loss nor the gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medclass.losses import (
    MaskedBCEWithLogitsLoss,
    MaskedCrossEntropyLoss,
    MaskedFocalLoss,
    build_loss,
    pos_weight_from_labels,
)

NAN = float("nan")


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=g) * 2
    targets = torch.tensor([[1.0, 0.0, NAN], [0.0, NAN, 1.0], [1.0, 1.0, 0.0], [NAN, 0.0, 0.0]])
    return logits, targets


def _bce_losses():
    return [
        MaskedBCEWithLogitsLoss(),
        MaskedBCEWithLogitsLoss(pos_weight=[2.0, 0.5, 3.0]),
        MaskedBCEWithLogitsLoss(label_smoothing=0.1),
        MaskedFocalLoss(gamma=2.0),
        MaskedFocalLoss(gamma=1.5, alpha=0.25, pos_weight=[2.0, 1.0, 1.0]),
    ]


@pytest.mark.parametrize("loss_fn", _bce_losses(), ids=lambda m: repr(m))
def test_nan_labels_do_not_change_loss(batch, loss_fn):
    logits, targets = batch
    base = loss_fn(logits, targets)
    assert torch.isfinite(base)
    # changing the logits at unknown positions leaves the loss unchanged
    moved = torch.where(torch.isnan(targets), logits + 7.0, logits)
    torch.testing.assert_close(loss_fn(moved, targets), base)
    # the loss equals the mean of the elementwise loss over known entries only
    elem = type(loss_fn)(**_init_kwargs(loss_fn), reduction="none")(logits, targets)
    known = ~torch.isnan(targets)
    torch.testing.assert_close(base, elem[known].mean())
    assert torch.all(elem[~known] == 0)


def _init_kwargs(m):
    kw = {"label_smoothing": m.label_smoothing}
    if m.pos_weight is not None:
        kw["pos_weight"] = m.pos_weight
    if isinstance(m, MaskedFocalLoss):
        kw.update(gamma=m.gamma, alpha=m.alpha)
    return kw


@pytest.mark.parametrize("loss_fn", _bce_losses(), ids=lambda m: repr(m))
def test_nan_labels_give_zero_finite_gradients(batch, loss_fn):
    logits, targets = batch
    x = logits.clone().requires_grad_(True)
    loss_fn(x, targets).backward()
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[torch.isnan(targets)] == 0)
    assert torch.all(x.grad[~torch.isnan(targets)] != 0)


def test_removing_a_row_with_only_nan_is_equivalent(batch):
    logits, targets = batch
    targets = targets.clone()
    targets[3] = NAN
    loss = MaskedBCEWithLogitsLoss()
    torch.testing.assert_close(loss(logits, targets), loss(logits[:3], targets[:3]))


def test_all_unknown_gives_zero_with_zero_grad():
    x = torch.randn(2, 3, requires_grad=True)
    for fn in (MaskedBCEWithLogitsLoss(), MaskedFocalLoss(), MaskedCrossEntropyLoss()):
        x.grad = None
        out = fn(x, torch.full((2, 3), NAN))
        assert out.item() == 0.0
        out.backward()
        assert torch.equal(x.grad, torch.zeros(2, 3))


def test_bce_matches_torch_on_known_labels():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, generator=g)
    t = (torch.rand(6, 3, generator=g) > 0.5).float()
    pw = torch.tensor([2.0, 0.5, 4.0])
    torch.testing.assert_close(MaskedBCEWithLogitsLoss(pos_weight=pw)(x, t),
                               torch.nn.BCEWithLogitsLoss(pos_weight=pw)(x, t))
    torch.testing.assert_close(MaskedBCEWithLogitsLoss()(x, t), F.binary_cross_entropy_with_logits(x, t))


def test_pos_weight_hand_computation():
    x = torch.tensor([[0.5, -1.0]])
    t = torch.tensor([[1.0, 0.0]])
    loss = MaskedBCEWithLogitsLoss(pos_weight=[3.0, 5.0], reduction="none")(x, t)
    expected = torch.tensor([[-3.0 * math.log(1 / (1 + math.exp(-0.5))), -math.log(1 - 1 / (1 + math.exp(1.0)))]])
    torch.testing.assert_close(loss, expected)


def test_label_smoothing():
    x = torch.tensor([[2.0, -1.0]])
    t = torch.tensor([[1.0, 0.0]])
    eps = 0.2
    smoothed = torch.tensor([[1 - eps / 2, eps / 2]])
    torch.testing.assert_close(MaskedBCEWithLogitsLoss(label_smoothing=eps)(x, t),
                               F.binary_cross_entropy_with_logits(x, smoothed))
    assert MaskedBCEWithLogitsLoss(label_smoothing=eps)(x, t) > MaskedBCEWithLogitsLoss()(x, t)


def test_binary_targets_shape_b():
    x = torch.randn(4, 1)
    t = torch.tensor([1.0, 0.0, NAN, 1.0])
    torch.testing.assert_close(MaskedBCEWithLogitsLoss()(x, t), MaskedBCEWithLogitsLoss()(x, t[:, None]))
    with pytest.raises(ValueError, match="shape"):
        MaskedBCEWithLogitsLoss()(torch.randn(4, 2), torch.zeros(4, 3))


def test_focal_gamma0_equals_bce(batch):
    logits, targets = batch
    pw = [2.0, 1.0, 0.5]
    torch.testing.assert_close(MaskedFocalLoss(gamma=0.0, pos_weight=pw)(logits, targets),
                               MaskedBCEWithLogitsLoss(pos_weight=pw)(logits, targets))


def test_focal_down_weights_easy_examples():
    t = torch.tensor([[1.0, 1.0]])
    x = torch.tensor([[4.0, -1.0]])  # easy, hard
    focal = MaskedFocalLoss(gamma=2.0, reduction="none")(x, t)
    bce = MaskedBCEWithLogitsLoss(reduction="none")(x, t)
    ratio = focal / bce
    p = torch.sigmoid(x)
    torch.testing.assert_close(ratio, (1 - p) ** 2)
    assert ratio[0, 0] < ratio[0, 1]


def test_focal_alpha():
    x = torch.tensor([[0.3, 0.3]])
    t = torch.tensor([[1.0, 0.0]])
    base = MaskedFocalLoss(gamma=2.0, reduction="none")(x, t)
    weighted = MaskedFocalLoss(gamma=2.0, alpha=0.25, reduction="none")(x, t)
    torch.testing.assert_close(weighted, base * torch.tensor([[0.25, 0.75]]))


def test_ce_matches_torch_on_known_rows():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 4, generator=g)
    idx = torch.tensor([0, 3, 1, 2, 1])
    onehot = F.one_hot(idx, 4).float()
    onehot[1, 2] = NAN  # row 1 unknown
    onehot[4] = NAN  # row 4 unknown
    keep = torch.tensor([0, 2, 3])
    for eps in (0.0, 0.1):
        got = MaskedCrossEntropyLoss(label_smoothing=eps)(x, onehot)
        torch.testing.assert_close(got, F.cross_entropy(x[keep], idx[keep], label_smoothing=eps))
    # integer targets with negative = unknown give the same
    idx_unknown = idx.clone()
    idx_unknown[[1, 4]] = -1
    torch.testing.assert_close(MaskedCrossEntropyLoss()(x, idx_unknown), F.cross_entropy(x[keep], idx[keep]))


def test_ce_unknown_rows_zero_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    t = F.one_hot(torch.tensor([0, 1, 2]), 4).float()
    t[1, 0] = NAN
    MaskedCrossEntropyLoss()(x, t).backward()
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[1] == 0) and torch.any(x.grad[0] != 0)


def test_ce_weighted_index_targets_match_torch():
    x = torch.randn(4, 3)
    idx = torch.tensor([0, 2, 1, 2])
    w = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(MaskedCrossEntropyLoss(weight=w)(x, idx), F.cross_entropy(x, idx, weight=w))


def test_pos_weight_from_labels():
    labels = np.array([[1, 0, NAN, 1], [0, 0, 1, 1], [0, NAN, 0, 1], [1, 0, NAN, 1], [0, 0, NAN, 1]])
    w = pos_weight_from_labels(labels)
    # label 0: 2 pos / 3 neg; label 1: no positive -> 1; label 2: 1 pos / 1 neg; label 3: no negative -> 1
    torch.testing.assert_close(w, torch.tensor([1.5, 1.0, 1.0, 1.0]))
    rare = np.zeros((1000, 1))
    rare[0] = 1
    assert pos_weight_from_labels(rare, max_weight=50.0).item() == 50.0
    assert pos_weight_from_labels(torch.tensor(labels)).shape == (4,)
    with pytest.raises(ValueError, match="max_weight"):
        pos_weight_from_labels(labels, max_weight=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pos_weight_from_labels(np.array([[2.0]]))


def test_build_loss():
    assert isinstance(build_loss("multilabel"), MaskedBCEWithLogitsLoss)
    assert type(build_loss("binary")) is MaskedBCEWithLogitsLoss
    assert isinstance(build_loss("multiclass"), MaskedCrossEntropyLoss)
    focal = build_loss("multilabel", "focal", pos_weight=[2.0, 3.0], gamma=1.0)
    assert isinstance(focal, MaskedFocalLoss) and focal.gamma == 1.0
    torch.testing.assert_close(focal.pos_weight, torch.tensor([2.0, 3.0]))
    assert build_loss("multiclass", "ce", label_smoothing=0.1).label_smoothing == 0.1
    with pytest.raises(ValueError, match="task"):
        build_loss("regression")
    with pytest.raises(ValueError, match="loss name"):
        build_loss("binary", "dice")
    with pytest.raises(ValueError, match="multiclass"):
        build_loss("multilabel", "ce")
    with pytest.raises(ValueError, match="pos_weight"):
        build_loss("multiclass", pos_weight=[1.0, 2.0])


@pytest.mark.parametrize(
    "factory,match",
    [
        (lambda: MaskedBCEWithLogitsLoss(pos_weight=[1.0, -1.0]), "pos_weight"),
        (lambda: MaskedBCEWithLogitsLoss(label_smoothing=1.0), "label_smoothing"),
        (lambda: MaskedFocalLoss(gamma=-1.0), "gamma"),
        (lambda: MaskedFocalLoss(alpha=1.5), "alpha"),
        (lambda: MaskedBCEWithLogitsLoss(reduction="avg"), "reduction"),
    ],
)
def test_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_pos_weight_wrong_size_raises():
    with pytest.raises(ValueError, match="pos_weight has 2 values"):
        MaskedBCEWithLogitsLoss(pos_weight=[1.0, 2.0])(torch.zeros(2, 3), torch.zeros(2, 3))
