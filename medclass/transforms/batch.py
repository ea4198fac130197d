"""Random training augmentation of a whole batch at once, on the batch's device.

:class:`BatchAugment` applies the recipe of :func:`medclass.transforms.build_transforms`'s per-item augmentation
(the same ``augment`` keys, defaults and checks, see :data:`~medclass.transforms.DEFAULT_AUGMENT`) to a
collated batch ``(B, C, *spatial)``, with independent random parameters per sample drawn from its own seeded
:class:`torch.Generator`:

* flips: each flip axis (``flip_axes``, or the left-right axis) on its own with ``flip_prob``, as MONAI ``Flip``;
* affine (``affine_prob``): rotation ``U(-rotate_deg, rotate_deg)`` (about every axis in 3D, composed as MONAI's
  ``create_rotate(..., rotate_order="XYZ")``), zoom ``1 + U(-zoom, zoom)`` per axis, translation
  ``U(-translate, translate) x size`` voxels per axis, composed as MONAI ``Affine`` (rotate @ translate @ scale
  about the image centre, output-to-input), bilinear, ``padding_mode`` zeros / border / reflection. One sampling
  grid (:func:`affine_grid`, = ``torch.nn.functional.affine_grid``) and one
  :func:`~torch.nn.functional.grid_sample` for all the selected samples;
* gamma contrast (``contrast_prob``, ``contrast_gamma``) as MONAI ``AdjustContrast``: each sample normalised by
  its own minimum and range, raised to ``gamma``, mapped back;
* intensity scale ``x * (1 + U(-s, s))`` then shift ``x + U(-s, s)`` (``intensity_prob`` each).

The per-item pipeline ends with a fixed normalisation ``(x - subtrahend) / divisor`` (``(0.5, 0.25)`` for most
presets) that runs *after* the per-item augmentation; the batch arrives already normalised. ``BatchAugment``
takes that normalisation into account, so the result is the same function of the image as the per-item
recipe: zero padding pads with the normalised zero ``-subtrahend / divisor``, and the intensity scale / shift
are in the units of the image before normalisation (the gamma step does not depend on them).

Differences from the per-item recipe: the random streams differ (MONAI's per-transform ``RandomState`` versus
one generator here), and with ``image_size=None`` translation is relative to the batch's spatial size (the
per-item pipeline has no fixed size to scale it by and leaves translation out).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from medclass.transforms.augment import check_augment_on, flip_axes
from medclass.transforms.presets import Preset, normalization, resolve_augment, resolve_options

logger = logging.getLogger(__name__)

__all__ = ["AugmentParams", "BatchAugment", "affine_grid", "build_batch_augment", "rotation_matrix"]

_EPS = 1e-7  # MONAI AdjustContrast's epsilon, in the units before normalisation


@dataclass
class AugmentParams:
    """The random parameters of one batch (CPU tensors, first dimension ``B``).

    Attributes:
        flip: ``(B, A)`` bool, flip of each of :attr:`BatchAugment.flip_axes`.
        affine: ``(B,)`` bool, the sample is resampled.
        rotate: ``(B, 1)`` (2D) or ``(B, 3)`` (3D) angles in radians (MONAI ``rotate_params``).
        scale: ``(B, N)`` scale factors, 1 = none (MONAI ``scale_params``: > 1 samples a larger field of view,
            i.e. zooms out).
        translate: ``(B, N)`` translation in voxels (MONAI ``translate_params``).
        contrast: ``(B,)`` bool, gamma applied.
        gamma: ``(B,)`` gamma values.
        scale_factor: ``(B,)`` intensity scale ``f`` (``x * (1 + f)``), 0 where not applied.
        shift: ``(B,)`` intensity offset, 0 where not applied.
    """

    flip: torch.Tensor
    affine: torch.Tensor
    rotate: torch.Tensor
    scale: torch.Tensor
    translate: torch.Tensor
    contrast: torch.Tensor
    gamma: torch.Tensor
    scale_factor: torch.Tensor
    shift: torch.Tensor

    @classmethod
    def identity(cls, batch_size: int, spatial_dims: int, n_flip_axes: int = 0) -> AugmentParams:
        """Parameters that change nothing (to build explicit parameters from, e.g. in tests)."""
        b, n = int(batch_size), int(spatial_dims)
        false = torch.zeros(b, dtype=torch.bool)
        return cls(
            flip=torch.zeros(b, n_flip_axes, dtype=torch.bool),
            affine=false.clone(),
            rotate=torch.zeros(b, 1 if n == 2 else 3, dtype=torch.float64),
            scale=torch.ones(b, n, dtype=torch.float64),
            translate=torch.zeros(b, n, dtype=torch.float64),
            contrast=false.clone(),
            gamma=torch.ones(b, dtype=torch.float64),
            scale_factor=torch.zeros(b, dtype=torch.float64),
            shift=torch.zeros(b, dtype=torch.float64),
        )

    def __getitem__(self, index) -> AugmentParams:
        """The parameters of a subset of the samples (``index`` as for a tensor's first dimension)."""
        return AugmentParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices as MONAI's ``create_rotate`` builds them, batched.

    Args:
        angles: ``(B, 1)`` for 2D (``[[cos, -sin], [sin, cos]]``) or ``(B, 3)`` for 3D (intrinsic ``XYZ``:
            ``Rx(a0) @ Ry(a1) @ Rz(a2)``, MONAI's default ``rotate_order``), radians.

    Returns:
        ``(B, N, N)`` with ``N`` 2 or 3, in ``angles``' dtype.
    """
    if angles.dim() != 2 or angles.shape[1] not in (1, 3):
        raise ValueError(f"angles must be (B, 1) for 2D or (B, 3) for 3D, got shape {tuple(angles.shape)}")
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def mat(rows):
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    if angles.shape[1] == 1:
        return mat([[c[:, 0], -s[:, 0]], [s[:, 0], c[:, 0]]])
    rx = mat([[one, zero, zero], [zero, c[:, 0], -s[:, 0]], [zero, s[:, 0], c[:, 0]]])
    ry = mat([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
    rz = mat([[c[:, 2], -s[:, 2], zero], [s[:, 2], c[:, 2], zero], [zero, zero, one]])
    return rx @ ry @ rz


class BatchAugment:
    """The training augmentation recipe applied to a whole batch ``(B, C, *spatial)`` on its device.

    Args:
        spatial_dims: 2 or 3.
        augment: as for :func:`~medclass.transforms.build_transforms`: ``None`` / ``True`` (defaults), ``False`` /
            ``{"enabled": False}`` (none: the batch passes unchanged) or a dict overriding
            :data:`~medclass.transforms.DEFAULT_AUGMENT`'s keys; validated by
            :func:`~medclass.transforms.resolve_augment` (``ValueError`` / ``TypeError``).
        preset: the preset whose augment defaults, options (``axcodes`` decides the left-right flip axis in 3D)
            and final normalisation apply; a name or :class:`~medclass.transforms.Preset`.
        options: the preset options (as ``build_transforms``'s ``options``).
        normalize: ``(subtrahend, divisor)`` the batch was normalised with after the point where the per-item
            recipe augments; ``None``: the preset's. ``(0, 1)`` for a batch of un-normalised images.
        seed: seed of the generator; ``None`` draws one from torch's global generator at the first call (so
            ``monai.utils.set_determinism`` makes it reproducible).
        rank: added to the seed so that the processes of a distributed run draw different augmentations;
            ``None``: this process's ``torch.distributed`` rank (0 when not distributed), read at the first call.

    Call it on a floating-point tensor ``(B, C, *spatial)`` (a :class:`monai.data.MetaTensor` is used as a plain
    tensor); it returns a plain tensor of the same shape, dtype and device, and never changes its input (which it
    returns as is when no step is enabled). The random parameters are drawn on the CPU, so a seed gives the same
    augmentation on every device.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        augment: Mapping[str, Any] | bool | None = None,
        preset: str | Preset = "cxr",
        options: Mapping[str, Any] | None = None,
        normalize: Sequence[float] | None = None,
        seed: int | None = 0,
        rank: int | None = None,
    ) -> None:
        if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.spatial_dims = int(spatial_dims)
        opts = resolve_options(preset, self.spatial_dims, **dict(options or {}))
        self.config = resolve_augment(augment, preset)
        cfg = self.config or {}
        self.flip_axes: tuple[int, ...] = flip_axes(cfg, self.spatial_dims, opts) if cfg else ()
        if normalize is None:
            normalize = normalization(preset, opts)
        try:
            sub, div = (float(v) for v in normalize)
        except (TypeError, ValueError):
            raise ValueError(f"normalize must be (subtrahend, divisor), got {normalize!r}") from None
        if not (math.isfinite(sub) and math.isfinite(div) and div > 0):
            raise ValueError(f"normalize must be finite with a positive divisor, got {normalize!r}")
        self.normalize = (sub, div)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
            raise ValueError(f"rank must be a non-negative int or None, got {rank!r}")
        self.seed, self.rank = seed, rank
        self._generator: torch.Generator | None = None
        # what is active, with the per-item pipeline's conditions (see presets._augmentations)
        self.do_flip = bool(self.flip_axes)
        self.do_affine = bool(cfg) and cfg["affine_prob"] > 0 and (
            cfg["rotate_deg"] > 0 or cfg["zoom"] > 0 or cfg["translate"] > 0
        )
        self.do_contrast = (
            bool(cfg) and cfg["contrast_gamma"] is not None and cfg["contrast_prob"] > 0
            and cfg["contrast_gamma"] != (1.0, 1.0)
        )
        self.do_scale = bool(cfg) and cfg["intensity_prob"] > 0 and cfg["intensity_scale"] > 0
        self.do_shift = bool(cfg) and cfg["intensity_prob"] > 0 and cfg["intensity_shift"] > 0

    @property
    def enabled(self) -> bool:
        """Whether any step can change a batch."""
        return self.do_flip or self.do_affine or self.do_contrast or self.do_scale or self.do_shift

    def __repr__(self) -> str:
        steps = [name for name, on in (("flip", self.do_flip), ("affine", self.do_affine),
                                       ("contrast", self.do_contrast), ("scale", self.do_scale),
                                       ("shift", self.do_shift)) if on]
        return (f"BatchAugment(spatial_dims={self.spatial_dims}, steps={steps}, flip_axes={self.flip_axes}, "
                f"normalize={self.normalize}, seed={self.seed})")

    # ------------------------------------------------------------------------------------------------ randomness
    @property
    def generator(self) -> torch.Generator:
        """The CPU generator the parameters are drawn from, seeded with ``seed + rank`` at first use."""
        if self._generator is None:
            rank = self.rank
            if rank is None:
                dist = torch.distributed
                rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            seed = self.seed if self.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())
            self._generator = torch.Generator().manual_seed(int(seed) + int(rank))
            logger.debug("batch augmentation seeded with %d + rank %d", seed, rank)
        return self._generator

    def set_seed(self, seed: int | None, rank: int | None = None) -> BatchAugment:
        """Start again from ``seed`` (+ ``rank``) at the next call."""
        self.seed, self.rank, self._generator = seed, rank, None
        return self

    def sample_params(self, batch_size: int, spatial_shape: Sequence[int]) -> AugmentParams:
        """Draw the parameters of one batch: every sample its own, each step independently with its probability.

        The same number of values is drawn whatever the configuration, in a fixed order.
        """
        b, n = int(batch_size), self.spatial_dims
        if len(spatial_shape) != n:
            raise ValueError(f"spatial_shape must have {n} values, got {tuple(spatial_shape)}")
        cfg, g = self.config, self.generator

        def u(*shape):  # U(0, 1), float64
            return torch.rand(*shape, generator=g, dtype=torch.float64)

        p = AugmentParams.identity(b, n, len(self.flip_axes))
        flip_draw, affine_draw = u(b, len(self.flip_axes)), u(b)
        angles, zooms, shifts = u(b, p.rotate.shape[1]), u(b, n), u(b, n)
        contrast_draw, gamma_draw = u(b), u(b)
        scale_draw, scale_val, shift_draw, shift_val = u(b), u(b), u(b), u(b)
        if cfg is None:
            return p
        if self.do_flip:
            p.flip = flip_draw < cfg["flip_prob"]
        if self.do_affine:
            p.affine = affine_draw < cfg["affine_prob"]
            p.rotate = (2 * angles - 1) * math.radians(cfg["rotate_deg"])
            p.scale = 1 + (2 * zooms - 1) * cfg["zoom"]
            size = torch.tensor([float(s) for s in spatial_shape], dtype=torch.float64)
            p.translate = (2 * shifts - 1) * cfg["translate"] * size
        if self.do_contrast:
            lo, hi = cfg["contrast_gamma"]
            p.contrast = contrast_draw < cfg["contrast_prob"]
            p.gamma = lo + gamma_draw * (hi - lo)
        if self.do_scale:
            p.scale_factor = torch.where(
                scale_draw < cfg["intensity_prob"], (2 * scale_val - 1) * cfg["intensity_scale"], 0.0
            )
        if self.do_shift:
            p.shift = torch.where(shift_draw < cfg["intensity_prob"], (2 * shift_val - 1) * cfg["intensity_shift"], 0.0)
        return p

    # --------------------------------------------------------------------------------------------------- apply
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a batch ``(B, C, *spatial)`` with newly drawn parameters (``images`` as is when disabled)."""
        x = self._check(images)
        if not self.enabled:
            return x
        return self.apply(x, self.sample_params(x.shape[0], x.shape[2:]))

    def _check(self, images: Any) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"BatchAugment expects a tensor (B, C, *spatial), got {type(images).__name__}")
        as_tensor = getattr(images, "as_tensor", None)  # MetaTensor: metadata only slows every op down
        x = as_tensor() if callable(as_tensor) else images
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"BatchAugment(spatial_dims={self.spatial_dims}) expects (B, C, {'H, W' if self.spatial_dims == 2 else 'D, H, W'}),"
                f" got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"BatchAugment expects a floating-point batch, got {x.dtype}")
        return x

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Augment ``images`` ``(B, C, *spatial)`` with the given parameters (deterministic).

        Steps run in the per-item order: flips, affine resampling, gamma, intensity scale, shift. Samples a step
        does not select are left exactly as they are.
        """
        x = self._check(images)
        b = x.shape[0]
        if params.affine.shape[0] != b:
            raise ValueError(f"params are for {params.affine.shape[0]} samples, the batch has {b}")
        dev = x.device
        out = x
        sub, div = self.normalize
        shape = (-1, *([1] * (x.dim() - 1)))  # per-sample values broadcast over (C, *spatial)
        # flips (each axis on its own)
        for k, axis in enumerate(self.flip_axes):
            idx = params.flip[:, k].nonzero().flatten()
            if idx.numel():
                out = _put(out, idx, _take(out, idx).flip(axis + 2))
        # affine: one sampling grid + one grid_sample for all the selected samples
        idx = params.affine.nonzero().flatten()
        if idx.numel():
            theta = self.theta(params[idx], x.shape[2:]).to(device=dev, dtype=x.dtype)
            sel = _take(out, idx)
            pad = sub / div if self.config and self.config["padding_mode"] == "zeros" else 0.0
            if pad:
                sel = sel + pad  # zero padding in the units before normalisation: pad with -sub/div here
            grid = affine_grid(theta, sel.shape)
            sel = F.grid_sample(sel, grid, mode="bilinear", padding_mode=self.config["padding_mode"], align_corners=False)
            if pad:
                sel = sel - pad
            out = _put(out, idx, sel)
        # gamma (AdjustContrast) per selected sample, on its own min / range (invariant to the normalisation)
        idx = params.contrast.nonzero().flatten()
        if idx.numel():
            gamma = params.gamma[idx].to(device=dev, dtype=x.dtype).view(shape)
            sel = _take(out, idx)
            flat = sel.reshape(sel.shape[0], -1)
            lo, hi = flat.amin(1).view(shape), flat.amax(1).view(shape)
            rng = hi - lo
            out = _put(out, idx, ((sel - lo) / (rng + _EPS / div)).pow(gamma) * rng + lo)
        # intensity scale then shift, in the units before normalisation: x*(1+f) + f*sub/div + o/div
        if bool((params.scale_factor != 0).any()) or bool((params.shift != 0).any()):
            f, o = params.scale_factor, params.shift
            mul = (1 + f).to(device=dev, dtype=x.dtype).view(shape)
            add = (f * sub / div + o / div).to(device=dev, dtype=x.dtype).view(shape)
            out = torch.addcmul(add, out, mul)
        return out if out is not x else x.clone()

    def theta(self, params: AugmentParams, spatial_shape: Sequence[int]) -> torch.Tensor:
        """The ``(B, N, N + 1)`` matrices for :func:`torch.nn.functional.affine_grid` (``align_corners=False``).

        MONAI's ``Affine`` maps output voxel coordinates ``p`` (centred on the image) to input coordinates
        ``R (S p + t)``; grid_sample's normalised coordinates are ``2 p / size`` per axis, with the axes in
        reverse order (x = the last one).
        """
        n = self.spatial_dims
        size = torch.tensor([float(max(2, s)) for s in spatial_shape], dtype=torch.float64)
        rot = rotation_matrix(params.rotate.to(torch.float64))
        lin = rot * params.scale.to(torch.float64)[:, None, :]  # R @ diag(S)
        shift = (rot @ params.translate.to(torch.float64)[:, :, None])[..., 0]  # R @ t
        norm = 2.0 / size
        lin = norm[None, :, None] * lin / norm[None, None, :]  # diag(2/size) A diag(size/2)
        shift = norm[None, :] * shift
        rev = list(range(n - 1, -1, -1))
        lin = lin[:, rev][:, :, rev]
        shift = shift[:, rev]
        return torch.cat([lin, shift[:, :, None]], dim=2)


def affine_grid(theta: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """:func:`torch.nn.functional.affine_grid` with ``align_corners=False``, computed by broadcasting.

    The same grid (to float rounding) for ``theta`` ``(B, N, N + 1)`` and ``size`` ``(B, C, *spatial)``, but as
    sums of per-axis terms instead of a batched matrix product over every voxel: that product made up half of the
    3D augmentation's time on CPU (8 x 64^3: 89 ms against 44 ms here, one full-size write instead of several).

    Returns:
        ``(B, *spatial, N)``, the sampling locations in grid_sample's normalised ``(x, y[, z])`` order.
    """
    spatial = [int(s) for s in size[2:]]
    n, nd = theta.shape[0], len(spatial)
    if theta.shape[1:] != (nd, nd + 1):
        raise ValueError(f"theta must be (B, {nd}, {nd + 1}) for {nd} spatial dims, got {tuple(theta.shape)}")
    grid = theta[:, :, nd].reshape(n, *([1] * nd), nd)  # translation, broadcast over the volume
    for j in range(nd):  # grid_sample's coordinate j (x = the last spatial axis) varies along axis nd - 1 - j
        axis = nd - 1 - j
        s = spatial[axis]
        coord = (torch.arange(s, device=theta.device, dtype=theta.dtype) * 2 + 1) / s - 1  # pixel centres
        shape = [1] * nd
        shape[axis] = s
        grid = grid + coord.view(1, *shape, 1) * theta[:, :, j].reshape(n, *([1] * nd), nd)
    return grid.contiguous()


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The samples ``idx`` (a CPU index) of ``x``: all of it, or a copy of the subset."""
    if idx.numel() == x.shape[0]:
        return x
    return x.index_select(0, idx.to(x.device))


def _put(x: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``x`` with the samples ``idx`` replaced by ``values``, never changing ``x`` itself."""
    if idx.numel() == x.shape[0]:
        return values
    return x.index_copy(0, idx.to(x.device), values)


def build_batch_augment(
    preset: str | Preset = "cxr",
    spatial_dims: int = 2,
    augment: Mapping[str, Any] | bool | None = None,
    augment_on: str = "batch",
    options: Mapping[str, Any] | None = None,
    seed: int | None = 0,
    rank: int | None = None,
) -> BatchAugment | None:
    """The training batch augmentation for a bundle config (``train#batch_augment``).

    Args:
        preset, spatial_dims, augment, options: as given to :func:`~medclass.transforms.build_transforms` for
            the training pipeline.
        augment_on: ``"batch"``: return a :class:`BatchAugment`; ``"sample"``: ``None`` (the per-item pipeline
            augments).
        seed: the run's seed (each rank adds its rank, see :class:`BatchAugment`).
        rank: see :class:`BatchAugment`.

    Returns:
        A :class:`BatchAugment` for :class:`medclass.engines.Trainer`'s ``batch_transform``, or ``None`` when
        ``augment_on`` is ``"sample"`` or augmentation is disabled (``augment: false``).
    """
    if check_augment_on(augment_on) == "sample":
        return None
    aug = BatchAugment(spatial_dims, augment, preset, options, seed=seed, rank=rank)
    if aug.config is None:
        return None
    logger.info("training augmentation on whole batches: %r", aug)
    return aug
