"""Reference networks written here in the published libraries' layouts (torchvision / timm / TorchXRayVision /
MedicalNet module names), independent of MONAI, to make weight files in those layouts and to compute what the
published networks compute from the same tensors."""

from __future__ import annotations

import sys
import types
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _bn(dims: int):
    return nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inp, planes, stride=1, downsample=None, dims=2, shortcut_a=False):
        super().__init__()
        C, B = _conv(dims), _bn(dims)
        self.conv1 = C(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = B(planes)
        self.conv2 = C(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = B(planes)
        self.downsample = downsample
        self.shortcut_a = (stride, planes) if shortcut_a and (stride != 1 or inp != planes) else None

    def shortcut(self, x):
        if self.downsample is not None:
            return self.downsample(x)
        if self.shortcut_a is not None:  # MedicalNet/Kensho Hara shortcut A: strided identity + zero channels
            stride, planes = self.shortcut_a
            out = x[(slice(None), slice(None)) + (slice(None, None, stride),) * (x.dim() - 2)]
            pad = torch.zeros(out.shape[0], planes - out.shape[1], *out.shape[2:])
            return torch.cat([out, pad], 1)
        return x

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(BasicBlock):
    expansion = 4

    def __init__(self, inp, planes, stride=1, downsample=None, dims=2, shortcut_a=False):
        nn.Module.__init__(self)
        C, B = _conv(dims), _bn(dims)
        self.conv1 = C(inp, planes, 1, bias=False)
        self.bn1 = B(planes)
        self.conv2 = C(planes, planes, 3, stride, 1, bias=False)  # torchvision V1.5: the stride in the 3x3 conv
        self.bn2 = B(planes)
        self.conv3 = C(planes, planes * 4, 1, bias=False)
        self.bn3 = B(planes * 4)
        self.downsample = downsample
        self.shortcut_a = None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class RefResNet(nn.Module):
    """torchvision's ResNet layout (2D), or MedicalNet's (3D, no fc; shortcut A for ResNet-18/34)."""

    def __init__(self, block, layers, in_ch=3, num_classes=1000, dims=2, fc=True, shortcut_a=False):
        super().__init__()
        C, B = _conv(dims), _bn(dims)
        self.inplanes = 64
        self.conv1 = C(in_ch, 64, 7, 2, 3, bias=False)
        self.bn1 = B(64)
        self.maxpool = (nn.MaxPool2d if dims == 2 else nn.MaxPool3d)(3, 2, 1)
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            down = None
            if (stride != 1 or self.inplanes != planes * block.expansion) and not shortcut_a:
                down = nn.Sequential(C(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                     B(planes * block.expansion))
            blocks = [block(self.inplanes, planes, stride, down, dims, shortcut_a)]
            self.inplanes = planes * block.expansion
            blocks += [block(self.inplanes, planes, 1, None, dims, shortcut_a) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        if fc:
            self.fc = nn.Linear(512 * block.expansion, num_classes)

    def stem(self, x):
        return F.relu(self.bn1(self.conv1(x)))

    def forward_features(self, x):
        x = self.maxpool(self.stem(x))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1) if x.dim() == 4 else F.adaptive_avg_pool3d(x, 1), 1)


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial weights and BatchNorm statistics (so that a wrong mapping shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.dim() <= 1:
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
    return model.eval()


# ------------------------------------------------------------------ DenseNet (torchvision / TorchXRayVision)
class _DenseLayer(nn.Sequential):
    def __init__(self, inp, growth, bn_size=4):
        super().__init__()
        self.add_module("norm1", nn.BatchNorm2d(inp))
        self.add_module("relu1", nn.ReLU())
        self.add_module("conv1", nn.Conv2d(inp, bn_size * growth, 1, bias=False))
        self.add_module("norm2", nn.BatchNorm2d(bn_size * growth))
        self.add_module("relu2", nn.ReLU())
        self.add_module("conv2", nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, super().forward(x)], 1)


class _DenseBlock(nn.Sequential):
    def __init__(self, n, inp, growth):
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(inp + i * growth, growth))


class _Transition(nn.Sequential):
    def __init__(self, inp, out):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(inp))
        self.add_module("relu", nn.ReLU())
        self.add_module("conv", nn.Conv2d(inp, out, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    """torchvision's / TorchXRayVision's DenseNet layout."""

    def __init__(self, block_config=(6, 12, 24, 16), growth=32, init=64, in_channels=3, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(in_channels, init, 7, 2, 3, bias=False)), ("norm0", nn.BatchNorm2d(init)),
            ("relu0", nn.ReLU()), ("pool0", nn.MaxPool2d(3, 2, 1)),
        ]))
        n = init
        for i, layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(layers, n, growth))
            n += layers * growth
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(n, n // 2))
                n //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(n))
        self.classifier = nn.Linear(n, num_classes)

    def forward_features(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(F.relu(self.features(x)), 1), 1)

    def forward(self, x):
        return self.classifier(self.forward_features(x))


def xrv_module() -> types.ModuleType:
    """A stand-in ``torchxrayvision.models`` module so that ``torch.save(model)`` pickles TorchXRayVision's class
    names (the file layout of its released weights); remove it with :func:`drop_xrv_module` before loading."""
    pkg = types.ModuleType("torchxrayvision")
    mod = types.ModuleType("torchxrayvision.models")
    stand_in = {}
    for cls in (_DenseBlock, _DenseLayer, _Transition):
        sub = type(cls.__name__, (cls,), {"__module__": "torchxrayvision.models"})
        sub.__qualname__ = cls.__name__
        stand_in[cls] = sub
        setattr(mod, cls.__name__, sub)

    def init(self, *args, **kwargs):
        DenseNet.__init__(self, *args, **kwargs)
        for m in self.modules():  # the children under TorchXRayVision's class names too
            if type(m) in stand_in:
                m.__class__ = stand_in[type(m)]

    net = type("DenseNet", (DenseNet,), {"__module__": "torchxrayvision.models", "__init__": init})
    net.__qualname__ = "DenseNet"
    mod.DenseNet = net
    pkg.models = mod
    sys.modules["torchxrayvision"] = pkg
    sys.modules["torchxrayvision.models"] = mod
    return mod


def drop_xrv_module() -> None:
    sys.modules.pop("torchxrayvision.models", None)
    sys.modules.pop("torchxrayvision", None)


def old_densenet_keys(state: dict) -> dict:
    """torchvision's original DenseNet file names (``norm.1``, ``conv.2`` ...)."""
    import re

    return {re.sub(r"(denselayer\d+)\.(norm|relu|conv)([12])\.", r"\1.\2.\3.", k): v for k, v in state.items()}


# ------------------------------------------------------------------ ViT (timm layout; torchvision names by renaming)
class _Block(nn.Module):
    def __init__(self, d, heads, mlp):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d, 3 * d)
        self.attn.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(d, mlp)
        self.mlp.fc2 = nn.Linear(mlp, d)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = ((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5).softmax(-1)
        x = x + self.attn.proj((att @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class TimmViT(nn.Module):
    """timm's VisionTransformer layout (class token pooling, pre-norm blocks, LayerNorm eps 1e-6)."""

    def __init__(self, img=32, patch=16, d=384, depth=12, heads=6, mlp=1536, in_ch=3, num_classes=1000):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_ch, d, patch, patch)
        n = (img // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, d))
        self.blocks = nn.Sequential(*[_Block(d, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, num_classes)

    def forward_features(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]


def torchvision_vit_state(timm_state: dict, old_mlp_names: bool = True) -> dict:
    """The same tensors under torchvision's VisionTransformer names (``mlp.linear_1`` as in its published file)."""
    out = {"class_token": timm_state["cls_token"], "encoder.pos_embedding": timm_state["pos_embed"]}
    m1, m2 = ("linear_1", "linear_2") if old_mlp_names else ("0", "3")
    for k, v in timm_state.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            rest = (rest.replace("norm1.", "ln_1.").replace("norm2.", "ln_2.")
                    .replace("attn.qkv.weight", "self_attention.in_proj_weight")
                    .replace("attn.qkv.bias", "self_attention.in_proj_bias")
                    .replace("attn.proj.", "self_attention.out_proj.")
                    .replace("mlp.fc1.", f"mlp.{m1}.").replace("mlp.fc2.", f"mlp.{m2}."))
            out[f"encoder.layers.encoder_layer_{i}.{rest}"] = v
        elif k.startswith("patch_embed.proj."):
            out["conv_proj." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("norm."):
            out["encoder.ln." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("head."):
            out["heads.head." + k.rsplit(".", 1)[1]] = v
    return out
