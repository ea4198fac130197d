"""ACS convolutions: 3D networks whose convolutions keep 2D-shaped kernels.

Yang et al., "Reinventing 2D Convolutions for 3D Images" (IEEE JBHI 2021), the "ACS" baseline of MedMNIST v2:
the output channels of every convolution are split into three groups (axial, coronal, sagittal); each group's 2D
kernel ``k x k`` is applied as a 3D convolution that is flat (size 1) along one axis. The weights are stored 2D-shaped
``(out_channels, in_channels, k, k)``, so a 2D checkpoint loads into them 1:1
(:func:`medclass.networks.inflate_2d_to_3d` with ``mode="acs"``), and a layer costs about ``1/k`` of a full 3D one.

Axes follow medclass/MONAI volumes ``(B, C, H, W, D)`` with the slice (depth) axis last, so the three groups use
3D kernels ``(k, k, 1)`` (axial: the 2D kernel on ``(H, W)``, exactly as in 2D), ``(k, 1, k)`` (coronal) and
``(1, k, k)`` (sagittal). (The paper's ``(1, k, k)``, ``(k, 1, k)``, ``(k, k, 1)`` are the same planes for the
``(D, H, W)`` layout.) Channel split as in the reference implementation: ``out_channels // 3`` each, the first
groups taking the remainder.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medclass.networks.classifier import Classifier
from medclass.networks.safe_conv import TinyInputFp32Mixin

logger = logging.getLogger(__name__)

__all__ = ["ACS_AXES", "ACSConv", "acs_split", "convert_to_acs"]

ACS_AXES: tuple[int, int, int] = (2, 1, 0)
"""Spatial axis (of ``(H, W, D)``) along which the axial, coronal and sagittal groups' kernels are flat."""


def acs_split(out_channels: int) -> tuple[int, int, int]:
    """Output channels of the axial, coronal and sagittal groups (``out_channels // 3`` each, remainder first)."""
    base, rest = divmod(int(out_channels), 3)
    return tuple(base + (1 if i < rest else 0) for i in range(3))  # type: ignore[return-value]


def _triple(name: str, value: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (int(value),) * 3
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return tuple(int(v) for v in value)  # type: ignore[return-value]
    raise ValueError(f"ACSConv {name} must be an int or 3 ints, got {value!r}")


class ACSConv(TinyInputFp32Mixin, nn.Module):
    """A 3D convolution made of three 2D kernels applied in the axial, coronal and sagittal planes.

    Behaves like ``nn.Conv3d(in_channels, out_channels, k, stride, padding, dilation, bias=bias)`` on inputs
    ``(B, C, H, W, D)`` (same output size), but with weights ``(out_channels, in_channels, k, k)``: output channels
    ``[0, a)`` use the kernel ``(k, k, 1)``, ``[a, a + c)`` ``(k, 1, k)`` and the rest ``(1, k, k)`` where
    ``(a, c, s) = acs_split(out_channels)``. Along its flat axis a group samples the centre of the full kernel's
    window, so any padding/stride/dilation gives the ``Conv3d`` output size (odd ``k`` only).

    Args:
        in_channels: input channels.
        out_channels: output channels (split into 3 groups; may be < 3, leaving groups empty).
        kernel_size: ``k``, an odd int (or 2 or 3 equal ints).
        stride: int or 3 ints.
        padding: int or 3 ints (zero padding).
        dilation: int or 3 ints.
        groups: must be 1.
        bias: add a learnable bias.

    Raises:
        ValueError: even or non-cubic kernel, ``groups != 1``, negative padding, non-positive stride/dilation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if groups != 1:
            raise ValueError(f"ACSConv supports groups=1 only, got groups={groups}")
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ACSConv {name} must be a positive int, got {v!r}")
        ks = (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(set(ks)) != 1 or len(ks) not in (1, 2, 3) or not isinstance(ks[0], int) or ks[0] < 1 or ks[0] % 2 == 0:
            raise ValueError(f"ACSConv needs an odd cubic kernel (k, k[, k]), got kernel_size={kernel_size!r}")
        k = int(ks[0])
        stride_ = _triple("stride", stride)
        padding_ = _triple("padding", padding)
        dilation_ = _triple("dilation", dilation)
        if min(stride_) < 1 or min(dilation_) < 1 or min(padding_) < 0:
            raise ValueError(
                f"ACSConv stride/dilation must be >= 1 and padding >= 0, got {stride_}, {dilation_}, {padding_}"
            )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = (k, k, k)
        self.stride = stride_
        self.padding = padding_
        self.dilation = dilation_
        self.groups = 1
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k))
        if bias:
            self.bias: torch.Tensor | None = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)

        # per group: flat axis, the padding of its 3D conv and how much to crop along the flat axis so that the
        # size-1 kernel samples the centre of the full kernel's window (output size identical to nn.Conv3d)
        self._sizes = list(acs_split(out_channels))
        self._axes = list(ACS_AXES)
        self._paddings = []
        self._crops = []
        for axis in self._axes:
            centre = dilation_[axis] * (k - 1) // 2
            shift = padding_[axis] - centre  # padding of the size-1 kernel; < 0 means cropping
            pad = list(padding_)
            pad[axis] = max(shift, 0)
            self._paddings.append(pad)
            self._crops.append(max(-shift, 0))
        self._stride = list(stride_)
        self._dilation = list(dilation_)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal weights (``fan_out``, ReLU, as MONAI ResNet and torchvision) and zero bias."""
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``(B, in_channels, H, W, D)`` into ``(B, out_channels, H', W', D')`` (``Conv3d`` sizes).

        Under CPU bf16 autocast, inputs whose every side is <= 3 are convolved in fp32 (oneDNN's bf16 weight
        gradient of a 3x3x1 kernel over 2x2x2 is NaN; :mod:`medclass.networks.safe_conv`).
        """
        if not torch.jit.is_scripting() and self._needs_fp32(x):
            return self._fp32_forward(x)
        return self._exact_forward(x)

    def _exact_forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        outs: list[torch.Tensor] = []
        start = 0
        for i in range(3):
            n = self._sizes[i]
            if n == 0:
                continue
            dim = 2 + self._axes[i]
            w = self.weight[start : start + n].unsqueeze(dim)
            b: torch.Tensor | None = None
            if bias is not None:
                b = bias[start : start + n]
            xi = x
            crop = self._crops[i]
            if crop > 0:
                xi = xi.narrow(dim, crop, xi.shape[dim] - 2 * crop)
            outs.append(F.conv3d(xi, w, b, self._stride, self._paddings[i], self._dilation, 1))
            start += n
        return torch.cat(outs, dim=1)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        s += f", padding={self.padding}, dilation={self.dilation}, split={tuple(self._sizes)}"
        return s + ("" if self.bias is not None else ", bias=False")


def _conv_padding(conv: nn.Conv3d, name: str) -> tuple[int, int, int]:
    padding = conv.padding
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0)
        # "same": PyTorch pads d*(k-1) in total, split evenly for odd kernels
        return tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))  # type: ignore[return-value]
    return tuple(int(p) for p in padding)  # type: ignore[return-value]


def convert_to_acs(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Conv3d`` with a kernel larger than 1 by an :class:`ACSConv` (in place).

    In/out channels, stride, padding, dilation and bias are kept; the new 2D-shaped weights are freshly initialised
    (kaiming normal), so convert a freshly built model and then load weights (e.g. a 2D checkpoint with
    :func:`medclass.networks.inflate_2d_to_3d` / ``load_weights(..., inflate="acs")``). 1x1x1 convolutions stay
    ``nn.Conv3d``. A :class:`~medclass.networks.Classifier` gets ``conv = "acs"`` (stored in its metadata); its
    Grad-CAM target layer is unchanged.

    Args:
        model: a 3D network, e.g. ``build_classifier("resnet18", spatial_dims=3, ...)``.

    Returns:
        The same model, converted.

    Raises:
        ValueError: a ViT classifier (no convolutions to convert but its patch embedding), a ``Conv3d`` with
            ``groups != 1``, a non-zero ``padding_mode``, or an even/non-cubic kernel (the message names the layer).
    """
    if isinstance(model, Classifier):
        if model.spatial_dims != 3:
            raise ValueError(
                f"ACS convolutions are for 3D models; this {model.arch} has spatial_dims={model.spatial_dims}"
            )
        if model.arch.startswith("vit"):
            raise ValueError("ACS convolutions apply to CNNs (densenet*/resnet*), not to arch='vit'")
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv3d) and max(m.kernel_size) > 1]
    for name, conv in targets:
        if conv.groups != 1:
            raise ValueError(f"cannot convert {name} to ACS: groups={conv.groups} (only groups=1)")
        if conv.padding_mode != "zeros":
            raise ValueError(f"cannot convert {name} to ACS: padding_mode={conv.padding_mode!r} (only 'zeros')")
        if len(set(conv.kernel_size)) != 1 or conv.kernel_size[0] % 2 == 0:
            raise ValueError(f"cannot convert {name} to ACS: kernel_size {conv.kernel_size} is not odd and cubic")
    for name, conv in targets:
        acs = ACSConv(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size[0],
            stride=tuple(conv.stride),
            padding=_conv_padding(conv, name),
            dilation=tuple(conv.dilation),
            bias=conv.bias is not None,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, acs)
    if isinstance(model, Classifier):
        model.conv = "acs"
    n_params = sum(math.prod(m.weight.shape) for _, m in targets)
    logger.info("converted %d Conv3d layers to ACS convolutions (%d kernel weights before)", len(targets), n_params)
    return model
