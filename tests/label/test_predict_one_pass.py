"""The app's predict with a Grad-CAM map: one forward pass gives the probabilities and the map, and the
probabilities are exactly those of a predict without a map; methods that cannot share the pass still work."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medclass.label.bundle import BundleModel


@pytest.fixture(scope="module")
def chest(bundles):
    model = BundleModel(bundles["cxr_classification"])
    image = sorted((bundles["phantoms2d"]).rglob("*.png"))[0]
    return model, image


def _passes(model: BundleModel) -> list[int]:
    calls: list[int] = []
    model._served().network.register_forward_hook(lambda m, i, o: calls.append(1))
    return calls


def test_probabilities_and_gradcam_from_one_pass(chest, tmp_path):
    model, image = chest
    plain, _ = model.predict(image)
    calls = _passes(model)
    explained, path = model.predict(image, saliency=True, method="gradcam", out_dir=tmp_path)
    assert len(calls) == 1  # the prediction's own pass: no second one for the map
    assert explained["probabilities"] == plain["probabilities"]  # bit for bit
    assert explained["predictions"] == plain["predictions"]
    assert explained["saliency"]["label"] == plain["top_label"]
    arr = np.asarray(Image.open(path))
    assert arr.shape == np.asarray(Image.open(image)).shape[:2] and arr.max() > arr.min()


def test_a_method_that_cannot_share_the_pass(chest, tmp_path):
    model, image = chest
    plain, _ = model.predict(image)
    calls = _passes(model)
    explained, path = model.predict(image, saliency=True, method="vanilla", out_dir=tmp_path)
    assert len(calls) >= 2  # the prediction, then the input gradients' own passes
    assert explained["probabilities"] == plain["probabilities"]
    assert np.asarray(Image.open(path)).max() > 0
