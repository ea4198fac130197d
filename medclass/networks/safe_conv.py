"""3D convolutions that run in fp32 where CPU bf16 autocast gives wrong weight gradients.

On the CPU (torch 2.13, oneDNN), the bf16 weight gradient of a 3x3x3 ``conv3d`` over a tiny input (every spatial
side <= 3, e.g. 2x2x2 in DenseNet121's last block at 64^3) is intermittently NaN: about 1 call in 5 to 10 in
``benchmarks/speed.py``-sized layers, reproduced with a single ``F.conv3d`` call and random inputs
(``tests/networks/test_safe_conv.py``). Those layers are the network's cheapest (a few voxels), so running just
them in fp32 costs little and keeps bf16 everywhere else; without it the trainer's non-finite guard skips the steps
and falls back to fp32 for the whole run.
"""

import torch
from torch import nn

__all__ = ["SmallInputSafeConv3d", "TinyInputFp32Mixin", "make_small_3d_convs_safe", "tiny_input_under_cpu_autocast"]

MAX_SIDE = 3  # inputs whose every spatial side is <= this run in fp32 under CPU autocast


def tiny_input_under_cpu_autocast(x: torch.Tensor, kernel_size) -> bool:
    """Whether a 3D convolution with ``kernel_size`` over ``x`` should leave CPU autocast (see the module doc).

    Also used by :class:`medclass.networks.ACSConv`, whose 3x3x1 kernels over a 2x2x2 input gave NaN bf16 weight
    gradients in every call here.
    """
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and max(kernel_size) > 1
        and max(x.shape[2:]) <= MAX_SIDE
    )


class TinyInputFp32Mixin:
    """The fp32 detour for 3D convolution modules (:class:`SmallInputSafeConv3d`, :class:`medclass.networks.ACSConv`):
    their ``forward`` starts with ``if not torch.jit.is_scripting() and self._needs_fp32(x): return
    self._fp32_forward(x)``; ``_exact_forward(x)`` is the module's own convolution. (Defined here, without
    postponed annotations, so that TorchScript can read the signatures of these unused methods.)"""

    @torch.jit.unused
    def _needs_fp32(self, x: torch.Tensor) -> bool:
        return tiny_input_under_cpu_autocast(x, self.kernel_size)

    @torch.jit.unused
    def _fp32_forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self._exact_forward(x.float())


class SmallInputSafeConv3d(TinyInputFp32Mixin, nn.Conv3d):
    """``nn.Conv3d`` that leaves CPU autocast (fp32) for inputs whose spatial sides are all <= ``MAX_SIDE``.

    Same parameters and state-dict keys as ``nn.Conv3d``; identical results outside CPU autocast.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and self._needs_fp32(x):
            return self._fp32_forward(x)
        return self._exact_forward(x)

    def _exact_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight, self.bias)


def make_small_3d_convs_safe(model: nn.Module) -> int:
    """Turn every plain ``nn.Conv3d`` of ``model`` into :class:`SmallInputSafeConv3d` in place; returns the count."""
    n = 0
    for m in model.modules():
        if type(m) is nn.Conv3d:
            m.__class__ = SmallInputSafeConv3d
            n += 1
    return n
