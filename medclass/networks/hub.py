"""Named pretrained weight files: pinned URLs with checksums, one cache folder, verified downloads.

A name such as ``"torchvision:resnet18"`` or ``"xrv:densenet121-res224-all"`` resolves to a :class:`WeightFile`: a
URL (Hugging Face files are pinned to a commit), the SHA-256 it must have and the preprocessing its network was
trained with. :func:`fetch` returns the verified file from the cache (``MEDCLASS_CACHE``, default
``~/.cache/medclass``; ``$XDG_CACHE_HOME/medclass`` where that is set), downloading it once if allowed.

Checksums: Hugging Face files are pinned by the SHA-256 Hugging Face publishes for them (their Git LFS object id).
torchvision publishes only the first 8 hex digits of each file's SHA-256, in its file name (``resnet18-f37072fd.pth``);
for those the prefix is verified, as ``torch.hub`` does. Where no checksum is published (:attr:`WeightFile.sha256`
and :attr:`WeightFile.sha256_prefix` both empty) medclass does not download the file: put it in the cache yourself
(the error says where) and it is used, with its SHA-256 logged.

Offline (``MEDCLASS_OFFLINE=1``, or no network), the error says which file to put where.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medclass.files import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["CACHE_ENV", "OFFLINE_ENV", "WEIGHTS", "WeightFile", "cache_dir", "download", "fetch", "sha256_of"]

CACHE_ENV = "MEDCLASS_CACHE"
"""Environment variable naming the cache folder of downloaded weights."""

OFFLINE_ENV = "MEDCLASS_OFFLINE"
"""Set to 1 to never download (cached or user-placed files only)."""

IMAGENET = {"value_range": (0.0, 1.0), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
            "image_size": (224, 224)}
INCEPTION = {"value_range": (0.0, 1.0), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "image_size": (224, 224)}
XRV = {"value_range": (-1024.0, 1024.0), "mean": (0.0,), "std": (1.0,), "image_size": (224, 224)}
MEDICALNET = {"value_range": None, "mean": None, "std": None, "image_size": None,
              "intensity": "z-score over the non-zero (foreground) voxels of each volume (MedicalNet); "
                           "medclass's mr preset with mr_norm=zscore does this"}

XRV_LABELS = ("Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
              "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia", "Lung Lesion",
              "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum")
"""TorchXRayVision's 18 outputs in order (``xrv.datasets.default_pathologies``)."""


@dataclass(frozen=True)
class WeightFile:
    """One downloadable weight file.

    Attributes:
        name: the name users pass (``"torchvision:resnet18"``).
        url: where it is downloaded from (Hugging Face: ``.../resolve/<commit>/<file>``).
        filename: its path inside the cache folder.
        sha256: full SHA-256 hex digest (``""`` where none is published).
        sha256_prefix: leading hex digits of the SHA-256 where only those are published (torchvision).
        size: size in bytes where published.
        checksum_source: where the checksum comes from.
        layout: the expected :data:`~medclass.networks.sources.LAYOUTS` entry.
        labels: the head's output names (TorchXRayVision), ``()`` otherwise.
        preprocessing: ``value_range`` / ``mean`` / ``std`` / ``image_size`` (/ ``intensity``) the weights expect.
        description: one line for listings.
    """

    name: str
    url: str
    filename: str
    sha256: str = ""
    sha256_prefix: str = ""
    size: int | None = None
    checksum_source: str = ""
    layout: str = ""
    labels: tuple[str, ...] = ()
    preprocessing: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _tv(name: str, file: str, layout: str, description: str, pre: dict | None = None) -> WeightFile:
    return WeightFile(
        f"torchvision:{name}", f"https://download.pytorch.org/models/{file}", f"torchvision/{file}",
        sha256_prefix=file.rsplit("-", 1)[1].split(".")[0],
        checksum_source="SHA-256 prefix in torchvision's file name (torchvision publishes no full digest)",
        layout=layout, preprocessing=dict(pre or IMAGENET), description=description,
    )


def _hf(name: str, repo: str, commit: str, file: str, sha: str, size: int | None, layout: str, description: str,
        pre: dict, labels: tuple[str, ...] = ()) -> WeightFile:
    return WeightFile(
        name, f"https://huggingface.co/{repo}/resolve/{commit}/{file}", f"{repo}/{commit[:8]}/{file}", sha256=sha,
        size=size, checksum_source=f"Hugging Face Git LFS SHA-256 of {repo}@{commit[:7]}/{file}", layout=layout,
        labels=labels, preprocessing=dict(pre), description=description,
    )


def _xrv_labels(*keep: str) -> tuple[str, ...]:
    return tuple(n if n in keep else "" for n in XRV_LABELS)


_ENTRIES = [
    _tv("resnet18", "resnet18-f37072fd.pth", "torchvision_resnet", "ResNet-18, ImageNet-1k (torchvision V1)"),
    _tv("resnet34", "resnet34-b627a593.pth", "torchvision_resnet", "ResNet-34, ImageNet-1k (torchvision V1)"),
    _tv("resnet50", "resnet50-11ad3fa6.pth", "torchvision_resnet", "ResNet-50, ImageNet-1k (torchvision V2)"),
    _tv("resnet50.v1", "resnet50-0676ba61.pth", "torchvision_resnet", "ResNet-50, ImageNet-1k (torchvision V1)"),
    _tv("densenet121", "densenet121-a639ec97.pth", "torchvision_densenet", "DenseNet-121, ImageNet-1k (torchvision)"),
    _tv("vit_b_16", "vit_b_16-c867db91.pth", "torchvision_vit", "ViT-B/16, ImageNet-1k (torchvision V1)"),
    _hf("timm:resnet18.a1_in1k", "timm/resnet18.a1_in1k", "ebd61f9c7420e5b5b53262b8ce6bbe311e1e872a",
        "pytorch_model.bin", "1d92fca7bc19313523ad23dff7f89800791baa592f40366537a829bd436e5e14", None,
        "torchvision_resnet", "ResNet-18, ImageNet-1k (timm, ResNet strikes back A1)", IMAGENET),
    _hf("timm:resnet50.a1_in1k", "timm/resnet50.a1_in1k", "5d9e13b8fdab4d9718bcf2c8f5c3af01878367e8",
        "model.safetensors", "773525d5821de224f8f30c33377b7a795d7863e08522698200d3217d3f2a41bb", None,
        "torchvision_resnet", "ResNet-50, ImageNet-1k (timm, ResNet strikes back A1)", IMAGENET),
    # no SHA-256 of these files was found published: medclass uses them where the user places them (see module doc)
    WeightFile("timm:vit_small_patch16_224.augreg_in21k_ft_in1k",
               "https://huggingface.co/timm/vit_small_patch16_224.augreg_in21k_ft_in1k/resolve/"
               "7913b1052f93f849b592386db8762f9256c3a885/pytorch_model.bin",
               "timm/vit_small_patch16_224.augreg_in21k_ft_in1k/7913b105/pytorch_model.bin",
               layout="timm_vit", preprocessing=dict(INCEPTION),
               description="ViT-S/16, ImageNet-21k + 1k (timm AugReg); not downloaded: no published checksum"),
    WeightFile("timm:vit_base_patch16_224.augreg2_in21k_ft_in1k",
               "https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k/resolve/"
               "3feba41e737e1b28af8e1fd7dca8eed073385972/model.safetensors",
               "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k/3feba41e/model.safetensors",
               layout="timm_vit", preprocessing=dict(INCEPTION),
               description="ViT-B/16, ImageNet-21k + 1k (timm AugReg2); not downloaded: no published checksum"),
    _hf("xrv:densenet121-res224-all", "torchxrayvision/densenet121-res224-all",
        "20d9a08eaca067587bb3215aafcc9b2202b4904c", "model.pt",
        "56524913dd16a906422e8d8b66a7a5c46be1d82eb7ac012d8103776f1aa68899", 28382008, "xrv_densenet",
        "TorchXRayVision DenseNet-121, chest X-rays of 8 data sets, 18 findings", XRV, XRV_LABELS),
    _hf("xrv:densenet121-res224-pc", "torchxrayvision/densenet121-res224-pc",
        "5fd7f7ace36101dfbe4a3304932630dd3965a816", "model.pt",
        "a9148ef62ae4e7a31a9bed8cef22811f39681cd61e4390398936efc6280af521", 28381804, "xrv_densenet",
        "TorchXRayVision DenseNet-121, PadChest", XRV,
        _xrv_labels(*(n for n in XRV_LABELS if n not in ("Lung Lesion", "Lung Opacity",
                                                           "Enlarged Cardiomediastinum")))),
    _hf("xrv:densenet121-res224-rsna", "torchxrayvision/densenet121-res224-rsna",
        "99f966ef7574e9884af632cc68906455f802d407", "model.pt",
        "906a59f48cf09638b745d66848a6c6f9d741368c66244717a81207329d140268", 28381974, "xrv_densenet",
        "TorchXRayVision DenseNet-121, RSNA Pneumonia", XRV, _xrv_labels("Pneumonia", "Lung Opacity")),
    _hf("medicalnet:resnet10", "TencentMedicalNet/MedicalNet-Resnet10", "4a4b0ef72be0ddf85a2c0720e0a4855c8ac0f0a8",
        "resnet_10_23dataset.pth", "afa8055f3e47f4a18239495d92a7abc587902c69c31c743de2b2784653b72605", 57456599,
        "medicalnet_resnet", "MedicalNet 3D ResNet-10, 23 medical data sets", MEDICALNET),
    # the ResNet-18 file whose checksum is published sits in the ResNet-10 repository at this commit
    _hf("medicalnet:resnet18", "TencentMedicalNet/MedicalNet-Resnet10", "3d5811d0e3943472fffedf90a4ca4f6fdb948e33",
        "resnet_18_23dataset.pth", "61224f9317fcce873366deb3703183e92cc47325b726b69691b33536244e10f4", 131992196,
        "medicalnet_resnet", "MedicalNet 3D ResNet-18, 23 medical data sets", MEDICALNET),
    _hf("medicalnet:resnet34", "TencentMedicalNet/MedicalNet-Resnet34", "88ab6700282025f59006c121d60a365c9ae6ba84",
        "resnet_34_23dataset.pth", "3ea7188e396774e4ef95b66e5e90a78273bb33f6e58d3d717bf24f5f1aaeaa28", 253276232,
        "medicalnet_resnet", "MedicalNet 3D ResNet-34, 23 medical data sets", MEDICALNET),
    _hf("medicalnet:resnet50", "TencentMedicalNet/MedicalNet-Resnet50", "8d924de10880fc392b71cbf61804e880aeb74e53",
        "resnet_50_23dataset.pth", "ff48a62219073fb977fd3f4ddfb8dc1367f0ec156c8d6f6c37e205bd683a246e", 184885051,
        "medicalnet_resnet", "MedicalNet 3D ResNet-50, 23 medical data sets", MEDICALNET),
]
WEIGHTS: dict[str, WeightFile] = {e.name: e for e in _ENTRIES}
"""Known weight files by name."""


def cache_dir() -> Path:
    """The weight cache: ``$MEDCLASS_CACHE``, else ``$XDG_CACHE_HOME/medclass``, else ``~/.cache/medclass``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "medclass"


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_digest(entry: WeightFile, digest: str, what: str) -> None:
    if entry.sha256 and digest != entry.sha256:
        raise ValueError(f"{what} has SHA-256 {digest}, expected {entry.sha256} for {entry.name} ({entry.url})")
    if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
        raise ValueError(
            f"{what} has SHA-256 {digest}, which does not start with {entry.sha256_prefix} as {entry.name}'s file "
            f"name says ({entry.url})"
        )


def download(entry: WeightFile, dest: str | os.PathLike, *, timeout: float = 60.0) -> Path:
    """Download ``entry.url`` to ``dest``, verifying its checksum before the file appears there.

    The data goes to a temporary file next to ``dest``; only a file with the expected SHA-256 (or prefix) and
    size is moved into place (atomically). A mismatching or interrupted download is deleted.

    Raises:
        ValueError: the entry has no checksum, or the downloaded bytes do not match it.
        OSError: the download failed (network, HTTP error); nothing is left behind.
    """
    if not entry.sha256 and not entry.sha256_prefix:
        raise ValueError(f"{entry.name} has no published checksum: medclass does not download it unverified")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    size = 0
    req = urllib.request.Request(entry.url, headers={"User-Agent": "medclass"})
    # a download that fails, or whose size or checksum is wrong, leaves no file at dest (only a removed temp)
    with urllib.request.urlopen(req, timeout=timeout) as resp, atomic_write(dest, "wb") as f:  # noqa: S310 - pinned URL
        while block := resp.read(1 << 20):
            h.update(block)
            f.write(block)
            size += len(block)
        if entry.size is not None and size != entry.size:
            raise ValueError(f"download of {entry.url} has {size} bytes, expected {entry.size} ({entry.name})")
        _check_digest(entry, h.hexdigest(), f"download of {entry.url}")
    logger.info("downloaded %s (%d bytes, SHA-256 %s) to %s", entry.name, size, h.hexdigest(), dest)
    return dest


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def fetch(name: str, *, allow_download: bool = True) -> Path:
    """The verified local file of a named weight file, downloaded into :func:`cache_dir` if it is not there.

    Args:
        name: a key of :data:`WEIGHTS`.
        allow_download: ``False``: cached (or user-placed) files only.

    Returns:
        The file's path.

    Raises:
        ValueError: unknown name, or a cached file whose checksum does not match (the message says to delete it).
        FileNotFoundError: not cached and not downloadable (offline, network failure, no published checksum):
            the message names the URL and the exact path to put the file at.
    """
    if name not in WEIGHTS:
        raise ValueError(f"unknown pretrained weights {name!r}: known names are {sorted(WEIGHTS)}")
    entry = WEIGHTS[name]
    path = cache_dir() / entry.filename
    if path.is_file():
        digest = sha256_of(path)
        try:
            _check_digest(entry, digest, f"cached file {path}")
        except ValueError as e:
            raise ValueError(f"{e}: delete it to download it again (or replace it with the right file)") from e
        if not entry.sha256 and not entry.sha256_prefix:
            logger.warning("%s: using %s, placed by hand (no published checksum; its SHA-256 is %s)", name, path,
                           digest)
        return path
    where = (f"download {entry.url} elsewhere and put it at {path} (or set {CACHE_ENV} to a folder holding "
             f"{entry.filename})")
    if not entry.sha256 and not entry.sha256_prefix:
        raise FileNotFoundError(f"{name} is not cached and has no published checksum to verify a download: {where}")
    if not allow_download or _offline():
        raise FileNotFoundError(f"{name} is not cached and downloads are off ({OFFLINE_ENV}): {where}")
    try:
        return download(entry, path)
    except (OSError, urllib.error.URLError) as e:
        raise FileNotFoundError(f"{name} could not be downloaded ({e}): {where}") from e
