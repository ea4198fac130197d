"""SaliencyHandler: files written per image and label, NIfTI maps aligned with the input (affine and shape of a
non-cubic 30-slice volume), default targets, TensorBoard images."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import DataLoader, Dataset
from PIL import Image

from medclass.handlers import SaliencyHandler
from medclass.handlers.saliency import default_targets, most_salient_slices, overlay_rgb, safe_name
from medclass.networks import build_classifier
from medclass.transforms import build_transforms


def _engine(network, task="multilabel"):
    def step(engine, batch):
        with torch.no_grad():
            logits = network(torch.as_tensor(batch["image"]).float())
        p = torch.softmax(logits, 1) if task == "multiclass" else torch.sigmoid(logits)
        return [{"pred": row} for row in p]

    return Engine(step)


def test_default_targets():
    probs = np.array([[0.9, 0.2, 0.7, 0.6], [0.1, 0.2, 0.3, 0.1], [0.3, 0.6, 0.2, 0.1]])
    thr = np.array([0.5, 0.5, 0.5, 0.65])
    assert default_targets(probs, thr, "multilabel", max_targets=2) == [[0, 2], [], [1]]
    assert default_targets(probs, thr, "multilabel", max_targets=5, negatives=True) == [[0, 2], [2], [1]]
    assert default_targets(probs, thr, "multiclass") == [[0], [2], [1]]
    assert safe_name("../a b/c.png") == "a_b_c.png"
    assert most_salient_slices(np.stack([np.full((2, 2), v) for v in (0, 3, 1, 2)], axis=-1), 2) == [1, 3]
    rgb = overlay_rgb(np.zeros((4, 5)), np.ones((4, 5)))
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8


def test_handler_2d_writes_png_and_npy(tmp_path):
    images = []
    for i in range(3):
        arr = (np.random.default_rng(i).random((40, 56)) * 255).astype(np.uint8)
        path = tmp_path / f"img{i}.png"
        Image.fromarray(arr).save(path)
        images.append({"image": str(path), "id": f"case/{i}"})
    net = build_classifier("resnet18", 2, 1, 3, image_size=(40, 56), width=4, label_names=["a", "b c", "d"])
    net.set_thresholds(0.0)  # every label "positive": capped to max_targets, most probable first
    ds = Dataset(images, transform=build_transforms("generic", 2, image_size=None))
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    h = SaliencyHandler(tmp_path / "out", net, method="gradcam++", task="multilabel", max_targets=2,
                        summary_writer=writer, tb_images=2)
    eng = _engine(net)
    h.attach(eng)
    eng.run(DataLoader(ds, batch_size=2))
    writer.close()
    out = tmp_path / "out" / "saliency"
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert len(rows) == 6 and {r["id"] for r in rows} == {"case_0", "case_1", "case_2"}
    for r in rows:
        heat = np.load(out / r["map"])
        assert heat.shape == (40, 56) and heat.dtype == np.float32 and 0 <= heat.min() and heat.max() <= 1
        assert (out / r["png"]).stat().st_size > 1000
        assert r["map"] == f"{r['id']}_{safe_name(r['label'])}.npy"
    assert any("b_c" in r["map"] for r in rows) or all(r["label"] != "b c" for r in rows)
    assert any((tmp_path / "tb").iterdir())
    # explicit targets by name, negatives skipped by default
    net.set_thresholds(1.0)
    h2 = SaliencyHandler(tmp_path / "o2", net, method="occlusion", targets=["d"], method_kwargs={"window": 8})
    eng2 = _engine(net)
    h2.attach(eng2)
    eng2.run(DataLoader(ds, batch_size=3))
    assert sorted(p.name for p in (tmp_path / "o2" / "saliency").glob("*.npy")) == [
        "case_0_d.npy", "case_1_d.npy", "case_2_d.npy"]
    h3 = SaliencyHandler(tmp_path / "o3", net)
    eng3 = _engine(net)
    h3.attach(eng3)
    eng3.run(DataLoader(ds, batch_size=3))
    assert not list((tmp_path / "o3" / "saliency").glob("*.npy"))  # nothing predicted positive
    with pytest.raises(ValueError, match="not labels of the model"):
        SaliencyHandler(tmp_path / "o4", net, targets=["zz"])._start(eng3)


def test_handler_3d_nifti_keeps_affine_and_non_cubic_shape(tmp_path):
    shape = (20, 24, 30)  # 30 slices in, 30 out
    affine = np.array([[0.8, 0, 0, -10.0], [0, 0.9, 0, 20.0], [0, 0, 2.5, -35.0], [0, 0, 0, 1]])
    items = []
    for i in range(2):
        vol = np.random.default_rng(i).normal(40, 20, shape).astype(np.int16)
        path = tmp_path / f"vol{i}.nii.gz"
        nib.save(nib.Nifti1Image(vol, affine), str(path))
        items.append({"image": str(path), "id": f"vol{i}"})
    net = build_classifier("densenet121", 3, 1, 2, image_size=shape, width=4, growth_rate=4, bn_size=2,
                           block_config=(2, 2, 2, 2), label_names=["x", "y"])
    ds = Dataset(items, transform=build_transforms("ct", 3, image_size=None))
    h = SaliencyHandler(tmp_path / "out", net, method="gradcam", task="multiclass", montage_slices=5)
    eng = _engine(net, "multiclass")
    h.attach(eng)
    eng.run(DataLoader(ds, batch_size=2))
    out = tmp_path / "out" / "saliency"
    niis = sorted(out.glob("*.nii.gz"))
    assert len(niis) == 2 and len(list(out.glob("*.png"))) == 2
    for f in niis:
        img = nib.load(str(f))
        assert img.shape == shape
        assert np.allclose(img.affine, affine, atol=1e-4)  # opens aligned with the input file
        data = img.get_fdata()
        assert 0 <= data.min() and data.max() <= 1  # an untrained net may give an all-zero Grad-CAM


class _BNNet(torch.nn.Module):
    """conv -> BatchNorm -> ReLU -> mean -> linear, with the temperature buffer medclass classifiers carry."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 2)
        self.label_names = ["a", "b"]
        self.spatial_dims = 2
        self.register_buffer("temperature", torch.full((1,), 2.0))

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


@pytest.mark.parametrize("engine_gives_preds", [True, False])
def test_probabilities_are_the_evaluators_when_max_images_cuts_a_batch(tmp_path, engine_gives_preds):
    """The probability written with each map (title, index.csv) is the evaluator's: eval mode and the stored
    temperature, also for a batch that max_images cuts short and for engines whose output has no predictions.
    (MONAI's evaluator puts the network back in train mode after each iteration, where BatchNorm would use the
    batch's own statistics.)"""
    torch.manual_seed(0)
    net = _BNNet()
    images = torch.randn(4, 1, 16, 16) * 3 + 1
    with torch.no_grad():  # running statistics unlike any batch's, so train mode would show
        net.bn.running_mean.fill_(-0.5)
        net.bn.running_var.fill_(0.25)
        net.eval()
        want = torch.sigmoid(net(images) / 2.0)
    assert float(want[:, 1].max() - want[:, 1].min()) > 0.01  # distinct per image: a mix-up would show
    net.train()  # as the evaluator leaves it

    def step(engine, batch):
        net.eval()
        with torch.no_grad():
            p = torch.sigmoid(net(batch["image"]) / 2.0)
        net.train()
        return {"pred": p} if engine_gives_preds else {}

    eng = Engine(step)
    h = SaliencyHandler(tmp_path / "out", net, method="vanilla", targets=["b"], max_images=3)
    h.attach(eng)
    eng.run([{"image": images[:2], "id": ["i0", "i1"]}, {"image": images[2:], "id": ["i2", "i3"]}])
    rows = list(csv.DictReader(open(tmp_path / "out" / "saliency" / "index.csv")))
    assert [r["id"] for r in rows] == ["i0", "i1", "i2"]
    got = [float(r["probability"]) for r in rows]
    assert got == pytest.approx(want[:3, 1].tolist(), abs=1e-5)
    assert all(m.training for m in net.modules())  # the caller's mode is left as it was
