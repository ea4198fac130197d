"""Batched training augmentation: geometry against MONAI, the recipe's semantics, randomness, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AdjustContrast, Affine, Flip

from medclass.transforms import (
    AugmentParams,
    BatchAugment,
    build_batch_augment,
    build_transforms,
    first_random_index,
)
from medclass.transforms.batch import affine_grid, rotation_matrix


def pattern(shape, seed=0):
    """A smooth, asymmetric float image ``(1, *shape)`` (no symmetry a wrong axis convention could hide behind)."""
    g = torch.meshgrid(*[torch.linspace(0, 1, s, dtype=torch.float64) for s in shape], indexing="ij")
    x = sum((k + 1) * gg ** (k + 1) for k, gg in enumerate(g)) + 0.5 * torch.sin(7 * g[0]) * torch.cos(5 * g[-1])
    x = x + 0.05 * torch.from_numpy(np.random.default_rng(seed).random(shape))
    x = (x - x.min()) / (x.max() - x.min())
    return x[None].float()


def params_for(aug, b, **values):
    """Explicit parameters: identity, with ``values`` (tensors or lists, one row per sample) filled in."""
    p = AugmentParams.identity(b, aug.spatial_dims, len(aug.flip_axes))
    for k, v in values.items():
        cur = getattr(p, k)
        setattr(p, k, torch.as_tensor(v, dtype=cur.dtype).reshape(cur.shape))
    return p


# ------------------------------------------------------------------------------------------ geometry vs MONAI
GEOMETRY = {
    2: [((0.35,), (1.0, 1.0), (0.0, 0.0)),  # rotation only
        ((0.0,), (1.15, 0.9), (0.0, 0.0)),  # anisotropic zoom only
        ((0.0,), (1.0, 1.0), (4.0, -3.0)),  # translation only
        ((-0.3,), (0.92, 1.08), (2.5, 3.5))],  # all together
    3: [((0.3, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
        ((0.0, 0.3, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
        ((0.0, 0.0, 0.3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
        ((0.0, 0.0, 0.0), (1.1, 0.9, 1.05), (2.0, -1.5, 3.0)),
        ((0.2, -0.15, 0.25), (0.95, 1.1, 1.0), (1.5, 2.0, -2.5))],
}
SHAPES = {2: (40, 56), 3: (20, 28, 36)}  # non-square / non-cubic: the axis order must be right


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_affine_matches_monai(dims, padding):
    """The whole batch in one grid_sample; each sample equals MONAI ``Affine`` with the same parameters."""
    shape, cases = SHAPES[dims], GEOMETRY[dims]
    imgs = torch.stack([pattern(shape, seed=i) for i in range(len(cases))])
    aug = BatchAugment(dims, {"padding_mode": padding}, preset="generic", normalize=(0.0, 1.0))
    p = params_for(aug, len(cases), affine=[True] * len(cases), rotate=[c[0] for c in cases],
                   scale=[c[1] for c in cases], translate=[c[2] for c in cases])
    out = aug.apply(imgs, p)
    assert out.shape == imgs.shape and out.dtype == imgs.dtype
    for i, (rot, scale, shift) in enumerate(cases):
        ref = Affine(rotate_params=rot[0] if dims == 2 else rot, scale_params=scale, translate_params=shift,
                     padding_mode=padding, mode="bilinear", image_only=True)(imgs[i])
        assert torch.allclose(out[i], torch.as_tensor(ref), atol=1e-4), (i, float((out[i] - ref).abs().max()))
        assert not torch.allclose(out[i], imgs[i], atol=1e-2)  # something moved


def test_rotation_direction_and_translation_sign_on_a_dot():
    """Independent of MONAI: where a single bright pixel goes (a 2D 90-degree rotation, a translation)."""
    img = torch.zeros(1, 1, 9, 11)
    img[0, 0, 2, 5] = 1.0  # row 2 (above the centre row 4), centre column 5
    aug = BatchAugment(2, {}, preset="generic", normalize=(0.0, 1.0))
    # MONAI convention: output(p) = input(R p); R(+90 deg) maps (r, c) offsets (-2, 0) from (0, -2)... so the dot
    # at offset (-2, 0) appears where R p = (-2, 0): p = R^-1 (-2, 0) = (0, 2): row 4, column 7
    out = aug.apply(img, params_for(aug, 1, affine=[True], rotate=[[math.pi / 2]]))
    assert tuple((out[0, 0] == out.max()).nonzero()[0].tolist()) == (4, 7) and out.max() > 0.99
    # translation t: output(p) = input(p + t), so the content moves by -t
    out = aug.apply(img, params_for(aug, 1, affine=[True], translate=[[1.0, -2.0]]))
    assert tuple((out[0, 0] == out.max()).nonzero()[0].tolist()) == (1, 7) and out.max() > 0.99


@pytest.mark.parametrize("size", [(3, 2, 5, 7), (2, 1, 4, 6, 9), (1, 1, 1, 3)])
def test_affine_grid_equals_torch_affine_grid(size):
    nd = len(size) - 2
    theta = torch.randn(size[0], nd, nd + 1, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.affine_grid(theta, list(size), align_corners=False)
    out = affine_grid(theta, size)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-6)
    with pytest.raises(ValueError, match="theta must be"):
        affine_grid(theta, (size[0], 1, 4))


@pytest.mark.parametrize("dims", [2, 3])
def test_rotation_matrix_is_monai_create_rotate(dims):
    from monai.transforms.utils import create_rotate

    angles = torch.tensor([[0.3, -0.7, 1.1][: 1 if dims == 2 else 3]], dtype=torch.float64)
    ref = create_rotate(dims, angles[0].tolist() if dims == 3 else float(angles[0, 0]))[:dims, :dims]
    assert np.allclose(rotation_matrix(angles)[0].numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
def test_flips_match_monai_flip_on_each_axis(dims):
    shape = SHAPES[dims]
    img = pattern(shape)
    aug = BatchAugment(dims, {"flip_axes": list(range(dims)), "flip_prob": 1.0}, preset="generic")
    assert aug.flip_axes == tuple(range(dims))
    for axis in range(dims):
        flags = [[k == axis for k in range(dims)]]
        out = aug.apply(img[None], params_for(aug, 1, flip=flags))[0]
        assert torch.equal(out, torch.as_tensor(Flip(spatial_axis=axis)(img)))
    # all axes at once, in one sample; none in the other
    both = torch.stack([img, img])
    out = aug.apply(both, params_for(aug, 2, flip=[[True] * dims, [False] * dims]))
    assert torch.equal(out[0], img.flip(list(range(1, dims + 1)))) and torch.equal(out[1], img)


def test_default_flip_axis_is_the_left_right_axis():
    assert BatchAugment(2, {}, preset="cxr").flip_axes == (1,)
    assert BatchAugment(3, {}, preset="generic").flip_axes == (2,)
    assert BatchAugment(3, {}, preset="ct").flip_axes == (0,)  # RAS: R/L is axis 0
    assert BatchAugment(3, {}, preset="ct", options={"axcodes": "PLS"}).flip_axes == (1,)
    assert BatchAugment(3, {"flip_axes": [0, -1, 2]}, preset="ct").flip_axes == (0, 2)
    assert BatchAugment(2, {"flip_prob": 0.0}).flip_axes == ()


# --------------------------------------------------------------------------------- the recipe's semantics
def _monai_recipe(img, p, i, aug, padding):
    """The per-item recipe with MONAI transforms on an un-normalised image, then the fixed normalisation."""
    x = img
    for k, axis in enumerate(aug.flip_axes):
        if p.flip[i, k]:
            x = Flip(spatial_axis=axis)(x)
    if p.affine[i]:
        rot = p.rotate[i].tolist()
        x = Affine(rotate_params=rot[0] if len(rot) == 1 else rot, scale_params=p.scale[i].tolist(),
                   translate_params=p.translate[i].tolist(), padding_mode=padding, image_only=True)(x)
    if p.contrast[i]:
        x = AdjustContrast(gamma=float(p.gamma[i]))(x)
    x = torch.as_tensor(x) * (1 + float(p.scale_factor[i])) + float(p.shift[i])
    sub, div = aug.normalize
    return (x - sub) / div


@pytest.mark.parametrize("dims, preset, padding", [(2, "cxr", "zeros"), (3, "mr", "border"), (3, "ct", "zeros")])
def test_recipe_on_a_normalised_batch_equals_the_per_item_recipe(dims, preset, padding):
    """The batch arrives after the fixed normalisation (x - 0.5) / 0.25; zero padding, gamma, intensity scale and
    shift still mean what they mean in the per-item pipeline (which augments before normalising)."""
    shape = SHAPES[dims]
    imgs = torch.stack([pattern(shape, seed=i) for i in range(4)])
    aug = BatchAugment(dims, {"padding_mode": padding, "flip_prob": 1.0}, preset=preset)
    assert aug.normalize == (0.5, 0.25)
    n_rot = 1 if dims == 2 else 3
    p = params_for(
        aug, 4,
        flip=[[True], [False], [True], [False]],
        affine=[True, True, False, True],
        rotate=[[0.2] * n_rot, [-0.3] * n_rot, [0.0] * n_rot, [0.1] * n_rot],
        scale=[[1.1] * dims, [0.9] * dims, [1.0] * dims, [1.0] * dims],
        translate=[[3.0] * dims, [-2.0] * dims, [0.0] * dims, [1.0] * dims],
        contrast=[True, False, True, True], gamma=[0.7, 1.0, 1.3, 1.1],
        scale_factor=[0.1, 0.0, -0.05, 0.0], shift=[0.0, 0.08, -0.1, 0.0],
    )
    sub, div = aug.normalize
    out = aug.apply((imgs - sub) / div, p)
    for i in range(4):
        ref = _monai_recipe(imgs[i], p, i, aug, padding)
        assert torch.allclose(out[i], ref, atol=1e-4), (i, float((out[i] - ref).abs().max()))


def test_gamma_uses_each_samples_own_range():
    """MONAI AdjustContrast semantics: min and max of each sample (over all its channels), not of the batch."""
    a = pattern((16, 20), seed=1).repeat(2, 1, 1) * torch.tensor([1.0, 3.0])[:, None, None]  # 2 channels
    b = a * 10 - 4
    aug = BatchAugment(2, {}, preset="generic", normalize=(0.0, 1.0))
    out = aug.apply(torch.stack([a, b]), params_for(aug, 2, contrast=[True, True], gamma=[2.0, 0.5]))
    assert torch.allclose(out[0], torch.as_tensor(AdjustContrast(2.0)(a)), atol=1e-5)
    assert torch.allclose(out[1], torch.as_tensor(AdjustContrast(0.5)(b)), atol=1e-4)
    assert out[0].min() == pytest.approx(float(a.min()), abs=1e-6) and out[1].max() == pytest.approx(float(b.max()), abs=1e-4)


def test_intensity_scale_and_shift_in_unnormalised_units():
    x = pattern((8, 8))
    aug = BatchAugment(2, {}, preset="cxr")  # normalise (x - 0.5) / 0.25
    out = aug.apply(((x - 0.5) / 0.25)[None], params_for(aug, 1, scale_factor=[0.2], shift=[0.1]))[0]
    assert torch.allclose(out, (x * 1.2 + 0.1 - 0.5) / 0.25, atol=1e-5)


# ------------------------------------------------------------------------------------- identity when off
@pytest.mark.parametrize("augment", [
    {"flip_prob": 0.0, "prob": 0.0},  # every probability 0
    {"flip_prob": 0.0, "prob": 1.0, "rotate_deg": 0, "zoom": 0, "translate": 0, "contrast_gamma": 1.0,
     "intensity_scale": 0, "intensity_shift": 0},  # every range 0
    False,  # disabled
    {"enabled": False},
])
def test_identity_when_probabilities_or_ranges_are_zero(augment):
    x = torch.stack([pattern((12, 14), seed=i) for i in range(3)])
    aug = BatchAugment(2, augment, preset="mr", options={})
    assert not aug.enabled
    assert torch.equal(aug(x), x)
    if augment is not False and augment.get("enabled", True):
        assert build_batch_augment("mr", 2, augment) is not None  # still the configured object, doing nothing
    else:
        assert build_batch_augment("mr", 2, augment) is None


def test_unselected_samples_stay_exactly_as_they_are():
    x = torch.stack([pattern((20, 24), seed=i) for i in range(4)])
    aug = BatchAugment(2, {"prob": 1.0, "flip_prob": 1.0, "intensity_scale": 0.1, "intensity_shift": 0.1})
    p = aug.sample_params(4, (20, 24))
    p.flip[1:] = False
    p.affine[1:] = False
    p.contrast[1:] = False
    p.scale_factor[1:] = 0.0
    p.shift[1:] = 0.0
    out = aug.apply(x, p)
    assert torch.equal(out[1:], x[1:]) and not torch.allclose(out[0], x[0], atol=1e-3)


# ----------------------------------------------------------------------------------------------- randomness
def test_every_sample_gets_its_own_parameters():
    aug = BatchAugment(3, {"prob": 1.0, "flip_prob": 1.0, "intensity_scale": 0.1, "intensity_shift": 0.1},
                       preset="mr")
    x = pattern((12, 14, 16)).expand(6, 1, 12, 14, 16).contiguous()  # six identical samples
    p = aug.sample_params(6, (12, 14, 16))
    assert p.affine.all() and p.contrast.all() and p.flip.all()
    for name in ("rotate", "scale", "translate", "gamma", "scale_factor", "shift"):
        v = getattr(p, name).reshape(6, -1)
        assert len({tuple(r.tolist()) for r in v}) == 6, name
    assert p.rotate.shape == (6, 3) and (p.rotate[:, 0] != p.rotate[:, 1]).all()  # about every axis independently
    out = aug.apply(x, p)
    flat = out.reshape(6, -1)
    assert all(not torch.allclose(flat[i], flat[j], atol=1e-3) for i in range(6) for j in range(i + 1, 6))


def test_parameters_stay_in_their_ranges_and_probabilities_hold():
    cfg = {"rotate_deg": 15, "zoom": 0.2, "translate": 0.1, "contrast_gamma": (0.7, 1.5), "prob": 0.3,
           "flip_prob": 0.5, "intensity_scale": 0.1, "intensity_shift": 0.2, "intensity_prob": 0.6}
    aug = BatchAugment(2, cfg, preset="cxr")
    p = aug.sample_params(4000, (30, 50))
    assert p.rotate.abs().max() <= math.radians(15) and p.rotate.abs().max() > math.radians(14)
    assert ((p.scale - 1).abs() <= 0.2).all() and (p.scale[:, 0] != p.scale[:, 1]).all()  # per axis
    assert (p.translate[:, 0].abs() <= 3.0).all() and (p.translate[:, 1].abs() <= 5.0).all()
    assert p.translate[:, 1].abs().max() > 4.9
    assert ((p.gamma >= 0.7) & (p.gamma <= 1.5)).all()
    assert p.affine.float().mean() == pytest.approx(0.3, abs=0.03)
    assert p.contrast.float().mean() == pytest.approx(0.3, abs=0.03)
    assert p.flip.float().mean() == pytest.approx(0.5, abs=0.03)
    assert (p.scale_factor != 0).float().mean() == pytest.approx(0.6, abs=0.03)
    assert (p.shift.abs() <= 0.2).all() and (p.scale_factor.abs() <= 0.1).all()
    # the draws for scale and shift are independent
    assert ((p.scale_factor != 0) != (p.shift != 0)).any()


def test_same_seed_same_augmentation_other_seed_or_rank_different():
    x = torch.stack([pattern((20, 24), seed=i) for i in range(8)])
    cfg = {"prob": 0.8}

    def run(**kw):
        aug = BatchAugment(2, cfg, **kw)
        return [aug(x) for _ in range(2)]

    a, b = run(seed=3), run(seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], a[1])  # the stream advances between batches
    assert not torch.equal(run(seed=4)[0], a[0])
    assert not torch.equal(run(seed=3, rank=1)[0], a[0])  # DDP ranks draw different augmentations
    assert torch.equal(run(seed=2, rank=1)[0], run(seed=3, rank=0)[0])  # seed + rank
    torch.manual_seed(11)
    c = run(seed=None)
    torch.manual_seed(11)
    assert torch.equal(run(seed=None)[0], c[0])  # seed=None: from torch's (set_determinism-seeded) generator
    aug = BatchAugment(2, cfg, seed=3)
    aug(x)
    assert torch.equal(aug.set_seed(3)(x), a[0])


def test_rank_comes_from_torch_distributed(monkeypatch):
    x = torch.stack([pattern((16, 16), seed=i) for i in range(4)])
    ref = BatchAugment(2, {"prob": 1.0}, seed=0, rank=1)(x)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    assert torch.equal(BatchAugment(2, {"prob": 1.0}, seed=0)(x), ref)


def test_input_is_not_modified_and_metatensor_is_accepted():
    x = torch.stack([pattern((16, 18), seed=i) for i in range(4)])
    keep = x.clone()
    out = BatchAugment(2, {"prob": 1.0, "flip_prob": 1.0})(MetaTensor(x))
    assert torch.equal(x, keep) and type(out) is torch.Tensor and out.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_the_gpu_with_the_same_result():
    x = torch.stack([pattern((20, 16, 24), seed=i) for i in range(4)])
    cfg = {"prob": 1.0, "flip_prob": 0.5, "intensity_scale": 0.1, "intensity_shift": 0.1}
    cpu = BatchAugment(3, cfg, preset="mr", seed=5)(x)
    gpu = BatchAugment(3, cfg, preset="mr", seed=5)(x.cuda())
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-4)


# ----------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, err, match", [
    ({"spatial_dims": 4}, ValueError, "spatial_dims"),
    ({"augment": {"rotate": 5}}, ValueError, "unknown augment keys"),
    ({"augment": {"prob": 2}}, ValueError, "probability"),
    ({"augment": {"padding_mode": "wrap"}}, ValueError, "padding_mode"),
    ({"augment": {"flip_axes": [2]}}, ValueError, "out of range"),
    ({"augment": "yes"}, TypeError, "augment must be"),
    ({"normalize": (0.5, 0.0)}, ValueError, "positive divisor"),
    ({"normalize": "x"}, ValueError, "normalize"),
    ({"preset": "pet"}, ValueError, "unknown preset"),
    ({"options": {"window": "lung"}}, ValueError, "does not apply"),
    ({"seed": "0"}, TypeError, "seed"),
])
def test_bad_configuration_is_refused(kwargs, err, match):
    with pytest.raises(err, match=match):
        BatchAugment(**{"spatial_dims": 2, **kwargs})


def test_bad_batches_are_refused():
    aug = BatchAugment(3, {})
    with pytest.raises(ValueError, match=r"expects \(B, C, D, H, W\)"):
        aug(torch.zeros(2, 1, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        aug(torch.zeros(2, 1, 4, 4, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="tensor"):
        aug(np.zeros((2, 1, 4, 4, 4), np.float32))


# ----------------------------------------------------------------------------- the item pipeline in batch mode
@pytest.mark.parametrize("dims, preset", [(2, "cxr"), (3, "ct")])
def test_batch_mode_leaves_the_item_pipeline_deterministic(dims, preset):
    size = (24,) * dims
    sample = build_transforms(preset, dims, size, train=True, augment={}, augment_on="sample")
    batch = build_transforms(preset, dims, size, train=True, augment={}, augment_on="batch")
    evaluation = build_transforms(preset, dims, size, train=False)
    assert first_random_index(sample) < len(sample.transforms)
    assert first_random_index(batch) == len(batch.transforms)  # cached to its end
    assert [type(t) for t in batch.transforms] == [type(t) for t in evaluation.transforms]
    with pytest.raises(ValueError, match="out of range"):  # augment is still checked
        build_transforms(preset, dims, size, train=True, augment={"flip_axes": [5]}, augment_on="batch")
    with pytest.raises(ValueError, match="augment_on must be one of"):
        build_transforms(preset, dims, size, train=True, augment_on="gpu")
    with pytest.raises(ValueError, match="augment_on must be one of"):
        build_batch_augment(preset, dims, {}, augment_on="gpu")
    assert build_batch_augment(preset, dims, {}, augment_on="sample") is None
    assert isinstance(build_batch_augment(preset, dims, {}, augment_on="BATCH"), BatchAugment)
