"""3D convolutions over tiny inputs leave CPU bf16 autocast (NaN weight gradients in oneDNN's bf16 kernel)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medclass.networks import build_classifier
from medclass.networks.safe_conv import SmallInputSafeConv3d, make_small_3d_convs_safe


def _weight_grad(conv: nn.Module, x: torch.Tensor, autocast: bool) -> tuple[torch.Tensor, torch.dtype]:
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = conv(x)
    y.float().sum().backward()
    return conv.weight.grad.clone(), y.dtype


def test_tiny_inputs_give_finite_fp32_gradients_under_bf16_autocast():
    """2x2x2 inputs (DenseNet121's last block at 64^3): plain bf16 gave NaN weight gradients in ~1 call in 6 here;
    the safe conv runs them in fp32, so every gradient is finite and equals the fp32 one."""
    torch.manual_seed(0)
    conv = nn.Conv3d(128, 32, 3, padding=1, bias=False)
    make_small_3d_convs_safe(conv)
    assert isinstance(conv, SmallInputSafeConv3d)
    for _ in range(30):
        x = torch.randn(8, 128, 2, 2, 2)
        g, dtype = _weight_grad(conv, x, autocast=True)
        assert dtype == torch.float32
        assert torch.isfinite(g).all()
        ref, _ = _weight_grad(conv, x, autocast=False)
        torch.testing.assert_close(g, ref)


def test_larger_inputs_stay_in_bf16_and_results_match_plain_conv():
    torch.manual_seed(1)
    plain = nn.Conv3d(4, 6, 3, padding=1)
    safe = nn.Conv3d(4, 6, 3, padding=1)
    safe.load_state_dict(plain.state_dict())
    make_small_3d_convs_safe(safe)
    x = torch.randn(2, 4, 8, 6, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert safe(x).dtype == torch.bfloat16  # the speed-up is kept where the kernel is sound
        torch.testing.assert_close(safe(x), plain(x))
    torch.testing.assert_close(safe(x), plain(x))  # no autocast: identical to nn.Conv3d
    assert list(safe.state_dict()) == list(plain.state_dict())


def test_3d_classifiers_use_safe_convs_and_script():
    net = build_classifier("densenet121", spatial_dims=3, image_size=64, stem="standard", width=8)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(isinstance(m, SmallInputSafeConv3d) for m in convs)
    x = torch.randn(2, 1, 64, 64, 64)
    net.eval()
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))
    # 2D networks are untouched
    net2 = build_classifier("resnet18", spatial_dims=2, image_size=32)
    assert not any(isinstance(m, SmallInputSafeConv3d) for m in net2.modules())


@pytest.mark.parametrize("arch", ["densenet121"])
def test_bf16_training_steps_of_a_3d_network_at_64_are_finite(arch):
    """The case that made the 3D bundle fall back to fp32: bf16 steps at 64^3 with the standard stem."""
    torch.manual_seed(0)
    net = build_classifier(arch, spatial_dims=3, image_size=64, stem="standard", width=16)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    for _ in range(4):
        x = torch.rand(4, 1, 64, 64, 64)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = net(x).float().square().mean()
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        opt.step()


def test_acs_conv_over_tiny_inputs_gives_finite_fp32_gradients_under_bf16_autocast():
    """ACSConv calls F.conv3d itself: its 3x3x1 kernel over a 2x2x2 input gave a NaN bf16 weight gradient in every
    one of 30 calls here. It follows the same rule as the safe conv: fp32 for tiny inputs, bf16 otherwise."""
    from medclass.networks import ACSConv

    torch.manual_seed(0)
    conv = ACSConv(128, 129, 3, padding=1, bias=False)
    for _ in range(10):
        x = torch.randn(8, 128, 2, 2, 2)
        g, dtype = _weight_grad(conv, x, autocast=True)
        assert dtype == torch.float32 and torch.isfinite(g).all()
        ref, _ = _weight_grad(conv, x, autocast=False)
        torch.testing.assert_close(g, ref)
    g, dtype = _weight_grad(conv, torch.randn(2, 128, 4, 4, 4), autocast=True)
    assert dtype == torch.bfloat16 and torch.isfinite(g).all()
