"""Saliency maps for medclass classifiers: Grad-CAM, Grad-CAM++, occlusion, vanilla and SmoothGrad gradients,
and attention rollout for ViT, in 2D and 3D, for batches of any size.

One entry point, :func:`saliency_maps`, returns maps with exactly the input's spatial shape, values in ``[0, 1]``
(1 = most important for the target label), one map per image and target::

    from medclass.saliency import saliency_maps
    maps = saliency_maps(model, images, targets=["nodule"], method="gradcam")   # (B, 1, H, W[, D])

:func:`explain` returns the logits with the maps, from the prediction's own forward pass for the CAMs (pass the
``precision`` the model predicts at): probabilities and a Grad-CAM map cost about one inference pass.

What sets it apart from ``monai.visualize`` and pytorch-grad-cam:

* batch size > 1 for every method (gradients of the summed target scores: in eval mode each image's score
  depends on that image only, so one backward pass gives every image's gradient);
* any label as target (multi-label outputs), not only the arg-max;
* the CAM is not flipped (high = important), 3D Grad-CAM++ works (all reductions run over every spatial dim);
* each CAM cell is placed at its receptive field's centre, traced through the network's convolutions and
  poolings (a padded stride-2 convolution centres output ``j`` on input ``2j``), not where an even tiling of the
  image would put it: on a ResNet stage of stride 8 the even tiling (``F.interpolate(align_corners=False)``, used
  by MONAI's CAMs and pytorch-grad-cam) is 3.5 pixels off per axis, enough to miss a thin or small finding;
* ViT token maps use the patch grid of the model (``image_size // patch_size`` per dim), never a fixed 14x14;
* the caller's model keeps its train/eval mode, hooks are removed, no ``.grad`` is left on parameters (gradients
  are taken with :func:`torch.autograd.grad`, never ``backward()``).

Scores are the target logits (before sigmoid/softmax) for the gradient methods and occlusion.

Maps are computed on the tensor the model sees (after preprocessing), so they live in the preprocessed image's
space: overlay them on that tensor, and for 3D save them with that tensor's affine
(:class:`medclass.handlers.SaliencyHandler` does both).

Modules: :mod:`~medclass.saliency.maps` (:func:`saliency_maps`, :class:`SaliencyMethod`),
:mod:`~medclass.saliency.methods` (the methods), :mod:`~medclass.saliency.geometry` (where grid cells lie, upsampling),
:mod:`~medclass.saliency.targets` (targets, layers, model state).
"""

from __future__ import annotations

from medclass.saliency.geometry import (
    UPSAMPLING,
    Geometry,
    cell_centres,
    resample_axis_aligned,
    trace_geometry,
    upsample,
)
from medclass.saliency.maps import (
    METHOD_OPTIONS,
    METHODS,
    SaliencyMethod,
    canonical_method,
    check_options,
    explain,
    record_maps,
    saliency_maps,
)
from medclass.saliency.methods import CAM_WEIGHTINGS, CamRecord, cam_forward
from medclass.saliency.targets import model_state, normalize_maps, resolve_target_layer, resolve_targets, to_spatial

__all__ = [
    "CAM_WEIGHTINGS", "CamRecord", "Geometry", "METHODS", "METHOD_OPTIONS", "SaliencyMethod", "UPSAMPLING",
    "canonical_method", "cam_forward", "cell_centres", "check_options", "explain", "model_state", "normalize_maps",
    "record_maps", "resample_axis_aligned", "resolve_target_layer", "resolve_targets", "saliency_maps", "to_spatial",
    "trace_geometry", "upsample",
]
