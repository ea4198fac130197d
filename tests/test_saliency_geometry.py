"""Where Grad-CAM puts each feature cell when it upsamples the map: at the cell's receptive-field centre.

A padded stride-2 convolution or max-pool centres its output ``j`` on input ``2j``; an evenly tiling upsampler
(``F.interpolate(..., align_corners=False)``, what MONAI's CAMs and pytorch-grad-cam use) assumes ``2j + 0.5``. On
a ResNet stage of stride 8 the two differ by 3.5 pixels per axis, enough for the map's peak to miss a thin finding
(benchmarks/RESULTS.md: 2D phantom pointing 0.75 -> 0.93). These tests pin the traced geometry to exact receptive
fields and to the factory's networks.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medclass.networks import build_classifier
from medclass.saliency import saliency_maps
from medclass.saliency import trace_geometry as _trace_geometry
from medclass.saliency import upsample as _upsample


def _centroids(net: nn.Module, x: torch.Tensor, cell) -> list[float]:
    """Per axis, the centroid of ``|d out[cell] / d x|``: the receptive-field centre of one output cell."""
    x = x.clone().requires_grad_(True)
    out = net(x)
    (g,) = torch.autograd.grad(out[(slice(None), slice(None), *cell)].abs().sum(), x)
    g = g.abs().sum(dim=(0, 1))
    res = []
    for ax in range(g.dim()):
        prof = g.sum(dim=tuple(d for d in range(g.dim()) if d != ax))
        res.append(float((prof * torch.arange(len(prof), dtype=prof.dtype)).sum() / prof.sum()))
    return res


def _ones(conv: nn.Module) -> nn.Module:
    with torch.no_grad():
        conv.weight.fill_(1.0)
    return conv


# chains of windows whose output cells have exactly symmetric receptive fields (all-ones kernels, average pools):
# the gradient centroid of an interior cell is its receptive-field centre
CHAINS = {
    "conv3-s2-p1 x3 (ResNet-like)": lambda c: [
        _ones(c(1, 1, 3, stride=2, padding=1, bias=False)) for _ in range(3)
    ],
    "conv7-s2-p3 + avgpool2 (DenseNet-like)": lambda c: [
        _ones(c(1, 1, 7, stride=2, padding=3, bias=False)),
        {2: nn.AvgPool2d, 3: nn.AvgPool3d}[c.dims](2, 2),
        _ones(c(1, 1, 1, bias=False)),
        {2: nn.AvgPool2d, 3: nn.AvgPool3d}[c.dims](2, 2),
    ],
    "even kernel, dilation, 'same', unpadded": lambda c: [
        _ones(c(1, 1, 4, stride=2, padding=1, bias=False)),  # centre 2j + 0.5
        _ones(c(1, 1, 3, stride=2, padding=2, dilation=2, bias=False)),  # centre 2j
        _ones(c(1, 1, 3, padding="same", bias=False)),
        _ones(c(1, 1, 3, bias=False)),  # valid: centre j + 1
        {2: nn.AvgPool2d, 3: nn.AvgPool3d}[c.dims](3, 2, 1, count_include_pad=True),
    ],
}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_traced_geometry_is_the_exact_receptive_field_centre(chain, dims):
    def conv(*a, **k):
        return {2: nn.Conv2d, 3: nn.Conv3d}[dims](*a, **k)

    conv.dims = dims
    net = nn.Sequential(*CHAINS[chain](conv))
    size = (64, 80) if dims == 2 else (48, 56, 64)
    x = torch.ones(1, 1, *size)
    with _trace_geometry(net, x) as geo:
        out = net(x)
    grid = tuple(out.shape[2:])
    assert grid in geo
    cell = [g // 2 for g in grid]  # interior: the receptive field is not cut by the padding
    want = [off + stride * j for (stride, off), j in zip(geo[grid], cell)]
    assert _centroids(net, x, cell) == pytest.approx(want, abs=1e-4)


NETS = [
    # (arch, dims, size, kwargs, layer): ResNet stages are stride-8/16 grids that an even tiling misplaces
    ("resnet18", 2, (128, 96), {}, None),
    ("resnet18", 2, (128, 128), {}, "backbone.layer4"),
    ("resnet18", 2, (224, 224), {"stem": "standard"}, None),  # 7x7 conv + max-pool stem
    ("resnet18", 2, (128, 128), {"dilate_last_stage": True}, "backbone.layer4"),
    ("resnet18", 3, (48, 32, 64), {}, None),
    ("resnet18", 3, (32, 32, 32), {"conv": "acs"}, None),
    ("densenet121", 2, (128, 128), {}, None),
    ("densenet121", 3, (64, 64, 64), {"block_config": (2, 2, 2)}, None),
]


@pytest.mark.parametrize("arch,dims,size,kw,layer", NETS, ids=[f"{n[0]}-{n[1]}d-{n[2][0]}-{n[3]}" for n in NETS])
def test_factory_networks_cells_sit_at_their_receptive_field_centres(arch, dims, size, kw, layer):
    torch.manual_seed(0)
    kw = {"width": 8, **kw} if arch == "resnet18" else {"width": 8, "growth_rate": 8, **kw}
    model = build_classifier(arch, dims, 1, 2, image_size=size, **kw).eval()
    name = layer or model.target_layer
    module = model.get_submodule(name)
    store = {}
    handle = module.register_forward_hook(lambda _m, _i, o: store.__setitem__("a", o))
    x = torch.randn(3, 1, *size)
    try:
        with _trace_geometry(model, x) as geo:
            model(x)
    finally:
        handle.remove()
    act = store["a"]
    grid = tuple(act.shape[2:])
    # the cell nearest the image centre: a receptive field cut by the padding on one side only is lopsided
    cell = [min(range(g), key=lambda j: abs(off + stride * j - (s - 1) / 2)) for g, s, (stride, off) in
            zip(grid, size, geo[grid])]
    traced = [off + stride * j for (stride, off), j in zip(geo[grid], cell)]

    class Upto(nn.Module):  # the model's forward up to the target layer
        def forward(self, inp):
            model(inp)
            return store["a"]

    handle = module.register_forward_hook(lambda _m, _i, o: store.__setitem__("a", o))
    try:
        measured = _centroids(Upto(), x, cell)
    finally:
        handle.remove()
    # random weights make the receptive field slightly lopsided (more so through DenseNet's concatenations)
    assert measured == pytest.approx(traced, abs=1.25 if arch == "resnet18" else 2.0)
    if arch == "resnet18":  # the even tiling is 3.5+ px off on these ResNets: the reason for the tracing
        even = [(j + 0.5) * s / g - 0.5 for j, s, g in zip(cell, size, grid)]
        assert all(abs(e - t) >= 3.5 for e, t in zip(even, traced))
        assert all(abs(e - m) > 2.0 for e, m in zip(even, measured))


class _StrideEight(nn.Module):
    """A CNN whose Grad-CAM is known exactly: the target layer samples the input every 8 pixels (three stride-2
    convolutions whose only weight is the kernel centre), the logit is the sum of that grid; so the CAM is the
    sampled image and a single bright pixel at ``8 * j`` lights exactly cell ``j``."""

    def __init__(self, dims: int):
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        layers = []
        for _ in range(3):
            c = conv(1, 1, 3, stride=2, padding=1, bias=False)
            with torch.no_grad():
                c.weight.zero_()
                c.weight[(0, 0) + (1,) * dims] = 1.0
            layers.append(c)
        self.features = nn.Sequential(*layers)
        self.spatial_dims = dims
        self.target_layer = "features"

    def forward(self, x):
        return self.features(x).flatten(1).sum(dim=1, keepdim=True)


@pytest.mark.parametrize("dims", [2, 3])
def test_gradcam_peaks_on_the_pixel_that_lit_the_cell(dims):
    size = (64, 48) if dims == 2 else (32, 40, 24)
    # interior cells (beyond the outer cells' centres the upsampled map is constant): grid 8x6 / 4x5x3
    cells = [(3, 2), (6, 1)] if dims == 2 else [(1, 3, 1), (2, 1, 1)]
    x = torch.zeros(len(cells), 1, *size)
    for b, cell in enumerate(cells):
        x[(b, 0, *[8 * j for j in cell])] = 1.0
    net = _StrideEight(dims).eval()
    for method in ("gradcam", "gradcam++"):
        maps = saliency_maps(net, x, targets=[0], method=method)
        assert maps.shape == (len(cells), 1, *size)
        for b, cell in enumerate(cells):
            peak = torch.nonzero(maps[b, 0] == maps[b, 0].max())
            assert peak.tolist() == [[8 * j for j in cell]], method  # a single peak, on the pixel
        # the evenly tiling upsampler puts cell j at 8j + 3.5: the peak moves off the lit pixel
        uniform = saliency_maps(net, x, targets=[0], method=method, upsample="uniform")
        for b, cell in enumerate(cells):
            peak = torch.nonzero(uniform[b, 0] == uniform[b, 0].max())
            assert all(p >= 8 * j + 3 for p, j in zip(peak[0].tolist(), cell))


def test_upsampling_modes_and_errors():
    maps = torch.rand(2, 3, 4, 5)
    # without geometry: exactly F.interpolate with align_corners=False
    assert torch.equal(_upsample(maps, (32, 40)), F.interpolate(maps, size=(32, 40), mode="bilinear",
                                                                 align_corners=False))
    # an even tiling written as geometry gives the same values
    even = [(8.0, 3.5), (8.0, 3.5)]
    assert torch.allclose(_upsample(maps, (32, 40), even), _upsample(maps, (32, 40)), atol=1e-6)
    # at the traced cell centres the upsampled map takes the cell values; beyond the outer ones it is constant
    up = _upsample(maps, (32, 40), [(8.0, 0.0), (8.0, 0.0)])
    assert torch.allclose(up[:, :, ::8, ::8], maps)
    assert torch.allclose(up[:, :, 24:, 32:], maps[:, :, -1:, -1:].expand(-1, -1, 8, 8))
    model = build_classifier("resnet18", 2, 1, 2, image_size=(32, 32), width=4).eval()
    with pytest.raises(ValueError, match="upsample must be one of"):
        saliency_maps(model, torch.randn(1, 1, 32, 32), upsample="nearest")
    with pytest.raises(ValueError, match="unknown option"):
        saliency_maps(model, torch.randn(1, 1, 32, 32), method="vanilla", upsample="uniform")


def test_vit_patch_grid_tiles_evenly_so_both_modes_agree():
    model = build_classifier("vit", 2, 1, 2, image_size=(32, 48), patch_size=(8, 16), hidden_size=32, mlp_dim=64,
                             num_layers=1, num_heads=2).eval()
    x = torch.randn(2, 1, 32, 48)
    with _trace_geometry(model, x) as geo:
        model(x)
    assert geo[model.grid] == [(8.0, 3.5), (16.0, 7.5)]  # patch j is centred on p * j + (p - 1) / 2
    a = saliency_maps(model, x, targets=[0], method="gradcam")
    b = saliency_maps(model, x, targets=[0], method="gradcam", upsample="uniform")
    assert torch.allclose(a, b, atol=1e-5)


def test_cell_centres_are_the_traced_placement():
    """The public helper gives the cell centres Grad-CAM upsamples from: 8j on ResNet's layer3 (not 8j + 3.5), and
    the patch centres of a ViT."""
    model = build_classifier("resnet18", 2, 1, 2, image_size=(128, 96), width=4).eval()  # medium stem: stride 8
    from medclass.saliency import cell_centres

    want = [[8.0 * j for j in range(16)], [8.0 * j for j in range(12)]]
    assert cell_centres(model, torch.randn(1, 1, 128, 96)) == want
    vit = build_classifier("vit", 2, 1, 2, image_size=(32, 48), patch_size=(8, 16), hidden_size=32, mlp_dim=64,
                           num_layers=1, num_heads=2).eval()
    assert cell_centres(vit, torch.randn(1, 1, 32, 48)) == [[3.5, 11.5, 19.5, 27.5], [7.5, 23.5, 39.5]]


def _affine(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("src_affine, src_shape, dst_shape", [
    # a 224 px map of a 1024 px radiograph (the bundle's resize)
    ([[4.5714, 0, 0, 1.7857], [0, 4.5714, 0, 1.7857], [0, 0, 1, 0], [0, 0, 0, 1]], (224, 224), (1024, 1024)),
    # a flip, an axis swap and a non-square grid that reaches past the destination's edges
    ([[0, -2.0, 0, 60.5], [3.0, 0, 0, -1.0], [0, 0, 1, 0], [0, 0, 0, 1]], (30, 40), (70, 64)),
    # 3D: anisotropic scales, a flip
    ([[2, 0, 0, 0.5], [0, -1.5, 0, 40], [0, 0, 3, -1], [0, 0, 0, 1]], (16, 20, 12), (40, 32, 30)),
])
def test_axis_aligned_resampling_equals_monai(src_affine, src_shape, dst_shape):
    from monai.data import MetaTensor
    from monai.transforms import ResampleToMatch

    from medclass.saliency import resample_axis_aligned

    img = torch.rand((1, *src_shape), generator=torch.Generator().manual_seed(0))
    dst = MetaTensor(torch.zeros((1, *dst_shape)), affine=torch.eye(4, dtype=torch.float64))
    ref = ResampleToMatch(mode="bilinear", padding_mode="zeros")(MetaTensor(img, affine=_affine(src_affine)),
                                                                  img_dst=dst)
    out = resample_axis_aligned(img, _affine(src_affine), dst.affine, dst_shape)
    assert out.shape == (1, *dst_shape)
    assert torch.allclose(out, ref.as_tensor(), atol=1e-6)
    assert float(out.abs().max()) > 0


def test_axis_aligned_resampling_refuses_a_rotation():
    from medclass.saliency import resample_axis_aligned

    c, s = 0.8, 0.6
    rotated = _affine([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert resample_axis_aligned(torch.rand(1, 8, 8), rotated, torch.eye(4, dtype=torch.float64), (8, 8)) is None
