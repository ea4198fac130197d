"""Preset hooks are called by what they declare, not by inspecting their signature: a plain callable as
``f(image_key, spatial_dims)``, a :class:`WithOptions` one with the resolved options too."""

import numpy as np
import pytest
from monai.transforms import Lambdad

from medclass.transforms import PRESETS, Preset, WithOptions, build_transforms, register_preset


def test_with_options_hook_gets_the_resolved_options():
    seen = {}

    def scale(key, spatial_dims, options):
        seen.update(options)
        return [Lambdad(key, lambda x: x / 255.0)]

    try:
        register_preset(Preset(name="test-options", voi=False, pre_resize=WithOptions(scale), spatial_dims=(2,)))
        img = np.full((16, 16), 255, np.uint8)
        img[0, 0] = 0
        build_transforms("test-options", image_size=(16, 16), percentiles=(1, 99))({"image": img, "id": "x"})
        assert seen["percentiles"] == (1.0, 99.0) and seen["size_mode"] == "resize"
    finally:
        PRESETS.pop("test-options", None)


def test_a_plain_hook_taking_options_fails_loudly():
    try:
        register_preset(Preset(name="test-plain", voi=False, intensity=lambda key, nd, options: [], spatial_dims=(2,)))
        with pytest.raises(TypeError):
            build_transforms("test-plain", image_size=(8, 8))
    finally:
        PRESETS.pop("test-plain", None)
