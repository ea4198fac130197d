"""Glue the bundle configs call, so that configs stay thin: data preparation, loss, datasets, inference inputs.

Every function here takes plain values from the config's top-level keys.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from medclass.data import (
    MISSING_FILES,
    apply_split_file,
    drop_missing_files,
    ensure_phantoms,
    ensure_splits,
    ensure_volume_phantoms,
    find_images,
    find_studies,
    items_from_paths,
    label_matrix,
    load_datalist,
    load_image_list,
    log_split_report,
    write_split_file,
)
from medclass.data import screen_items as screen
from medclass.data.cache import CompactCacheDataset, CompactPersistentDataset, cache_dtype_for, resolve_cache
from medclass.losses import build_loss, pos_weight_from_labels
from medclass.vocab import IMAGE_EXTENSIONS, SPLIT_NAMES, canonical_split, flag, optional  # noqa: F401  (configs)

logger = logging.getLogger(__name__)

def prepare_data(
    datalist: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    label_names: Sequence[str] | None = None,
    task: str | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    resplit: bool = False,
    check_files: bool = True,
    phantoms: dict | None = None,
    missing_files: str = "error",
    skipped=None,
    split_file: str | os.PathLike | None = None,
    split_out: str | os.PathLike | None = None,
):
    """Load a datalist and make sure it has non-empty training, validation and test splits.

    Args:
        datalist: a CSV, JSON, MedMNIST ``.npz`` or class-per-folder tree; ``None`` uses the synthetic phantom
            set in ``dataset_dir`` (made there on first use).
        dataset_dir: base folder for relative image paths (and the phantom set).
        label_names: label order; ``None`` takes it from the source (phantoms, npz, folders) .
        task: ``multilabel``, ``binary`` or ``multiclass``; ``None`` infers it.
        fractions: training/validation/test shares for sources without (complete) splits.
        seed: seed of the patient-disjoint split.
        resplit: pool the given splits and re-split patient-disjointly (e.g. the NIH1000 split shares patients).
        check_files: check up front that every image file exists.
        phantoms: arguments for :func:`medclass.data.ensure_phantoms` (``n``, ``size``, ``seed``, ...); with
            ``spatial_dims: 3``, for :func:`medclass.data.ensure_volume_phantoms` (CT-like NIfTI volumes).
        missing_files: ``error`` (default): rows whose image file is absent stop the run, naming them; ``skip``:
            they are left out, listed in ``skipped`` and counted in the log (with the positives lost per label).
        skipped: a :class:`medclass.data.SkipList` for the left-out rows.
        split_file: a split file (``id``, ``split`` columns; see :func:`medclass.data.write_split_file`) that
            fixes the splits instead of ``fractions``/``seed``/``resplit``.
        split_out: write the splits used to this CSV (training writes ``models/split.csv``); rank 0 only.

    Returns:
        A :class:`medclass.data.Datalist` with ``training``, ``validation`` and ``test`` splits.
    """
    resplit, check_files = flag(resplit, "resplit"), flag(check_files, "check_files")
    missing_files = str(missing_files).lower()
    if missing_files not in MISSING_FILES:
        raise ValueError(f"missing_files must be one of {MISSING_FILES}, got {missing_files!r}")

    if datalist is None or str(datalist) == "":
        if dataset_dir is None:
            raise ValueError("no datalist given and no dataset_dir for the synthetic phantom set")
        args = dict(phantoms or {})
        make = ensure_volume_phantoms if int(args.pop("spatial_dims", 2)) == 3 else ensure_phantoms
        datalist = _on_rank0_first(lambda: make(dataset_dir, **args))
    skip_missing = missing_files == "skip" and check_files
    data = load_datalist(datalist, label_names, task=task, dataset_dir=dataset_dir,
                         check_files=check_files and not skip_missing)
    if skip_missing:
        data = drop_missing_files(data, skipped, source=str(datalist))
    if split_file is not None and str(split_file) != "":
        data = apply_split_file(data, split_file)
    else:
        data = ensure_splits(data, fractions=tuple(fractions), seed=seed, resplit=resplit)
    log_split_report(data.splits, data.label_names)
    if split_out is not None and str(split_out) != "" and _rank() == 0:
        write_split_file(split_out, data.splits)
    return data


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def external_items(datalist, dataset_dir=None, label_names: Sequence[str] | None = None, task: str | None = None,
                   check_files: bool = True, output_dir=None, internal_dir=None) -> list[dict]:
    """Every item of an external datalist (all its splits pooled) for external validation.

    Args:
        datalist: the external CSV / JSON / npz / class folders (required).
        dataset_dir: base folder of its relative image paths.
        label_names: the model's labels (the datalist must have them all).
        task: the model's task.
        check_files: check that every image file exists.
        output_dir: the external evaluation folder; with ``internal_dir``, checked before anything is written.
        internal_dir: the internal evaluation folder, which the external run must not overwrite.

    Raises:
        ValueError: no datalist given, or ``output_dir`` is the internal evaluation folder.
    """
    if datalist is None or str(datalist) == "":
        raise ValueError("external validation needs a datalist: set external_datalist (and external_dataset_dir)")
    if output_dir is not None and internal_dir is not None and \
            Path(output_dir).resolve() == Path(internal_dir).resolve():
        raise ValueError(f"external validation would overwrite the internal evaluation in {output_dir}: give it "
                         "another folder with --output_dir (e.g. eval_external)")
    data = load_datalist(datalist, label_names, task=task, dataset_dir=dataset_dir, check_files=check_files)
    items = data.all_items()
    logger.info("external datalist %s: %d images", datalist, len(items))
    return items


def _on_rank0_first(fn):
    """Run ``fn`` on rank 0, then on the other ranks (which then find its files), when distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return fn()
    if dist.get_rank() == 0:
        result = fn()
        dist.barrier()
        return result
    dist.barrier()
    return fn()


def loss_for(data, name: str = "auto", label_smoothing: float = 0.0, gamma: float = 2.0, pos_weight: bool = True):
    """The loss for ``data.task``; multi-label/binary BCE or focal get ``pos_weight`` from training prevalence."""
    weight = None
    if pos_weight and data.task != "multiclass":
        weight = pos_weight_from_labels(label_matrix(data.splits["training"]))
        logger.info("pos_weight from training prevalence: %s", [round(float(w), 3) for w in weight])
    return build_loss(data.task, name=name, pos_weight=weight, label_smoothing=label_smoothing, gamma=gamma)


def _image_files(folder: Path) -> list[str]:
    files = find_images(folder)
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    return files


def inference_items(source=None, data_args: dict | None = None, spatial_dims: int = 2) -> list[dict]:
    """Items ``{"image", "id"}`` to predict on, without labels.

    Args:
        source: an image file, a folder (searched recursively), a list of files, a CSV/JSON/npz datalist, or
            ``None`` for the test split of the bundle's data. For 3D bundles, a folder holding several DICOM
            files is one study (a series), and so is each such subfolder.
        data_args: the bundle's :func:`prepare_data` arguments; the data is only loaded when ``source`` is
            ``None``. Its ``dataset_dir`` is the base for relative paths.
        spatial_dims: 2 or 3, the bundle's.
    """
    data_args = dict(data_args or {})
    dataset_dir = data_args.get("dataset_dir")
    if source is None or str(source) == "":
        if not data_args:
            raise ValueError("inference needs an input: set 'input' to an image, a folder or a datalist")
        data = prepare_data(**data_args)
        return [{"image": it["image"], "id": it["id"]} for it in data.splits["test"]]
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
    else:
        path = Path(source)
        if dataset_dir is not None and not path.is_absolute() and not path.exists():
            path = Path(dataset_dir) / path
        if not path.exists():
            raise FileNotFoundError(f"{path}: inference input does not exist")
        if path.is_dir():
            paths = find_studies(path) if int(spatial_dims) == 3 else _image_files(path)
        elif path.name.lower().endswith((".csv", ".json", ".npz")):
            return load_image_list(path, dataset_dir=dataset_dir)
        else:
            paths = [path]
    return items_from_paths(paths, source=str(source) if not isinstance(source, (list, tuple)) else "inputs")


def cached_dataset(data: Sequence[dict], transform, cache: str = "memory", cache_dir: str | os.PathLike | None = None,
                   cache_rate: float = 1.0, num_workers: int = 0, cache_dtype: str = "auto", spatial_dims: int = 2):
    """A dataset that decodes and preprocesses each item once; random augmentation runs after the cache.

    MONAI's cache datasets run the transform chain up to its first random transform once and keep the result,
    so only the augmentation is repeated every epoch (with ``augment_on: batch`` the chain has no random step and
    is cached whole; the trainer augments the batches). Cached images are kept packed (``uint8`` / ``float16``,
    :mod:`medclass.data.cache`) and unpacked to float32 when read.

    Args:
        data: datalist items.
        transform: the item transform (deterministic part first, then augmentation).
        cache: ``memory`` (fastest; the cached share of the data must fit in RAM), ``disk`` (in ``cache_dir``:
            for datasets larger than memory; reused by later runs) or ``none`` (decode every epoch); ``auto`` is
            resolved before (:func:`medclass.data.cache.resolve_cache`).
        cache_dir: folder for ``disk``.
        cache_rate: share of items cached in memory (``memory`` only).
        num_workers: threads that fill the memory cache.
        cache_dtype: storage type of cached images: ``auto`` (uint8 in 2D, float16 in 3D), ``uint8``, ``float16``
            or ``float32``.
        spatial_dims: 2 or 3 (for ``auto``).
    """
    from monai.data import Dataset

    cache = str(cache).lower()
    dtype = cache_dtype_for(cache_dtype, spatial_dims)
    if cache == "memory":
        return CompactCacheDataset(data, transform, cache_rate=float(cache_rate), cache_dtype=dtype,
                                   num_workers=int(num_workers or 0) or None)
    if cache == "disk":
        if not cache_dir:
            raise ValueError("cache: disk needs a cache_dir (a folder for the preprocessed items)")
        folder = Path(cache_dir) / dtype  # items of another storage type are other files
        folder.mkdir(parents=True, exist_ok=True)
        return CompactPersistentDataset(data, transform, cache_dir=folder, cache_dtype=dtype)
    if cache == "none":
        return Dataset(data, transform)
    raise ValueError(f"cache must be one of memory, disk, none here (auto is resolved before), got {cache!r}")


def cache_for(cache: str, data, transform, **kwargs) -> str:
    """The cache of a training run (training + validation items): ``cache``, or what ``auto`` chooses
    (:func:`medclass.data.cache.resolve_cache`; ``kwargs`` go there)."""
    items = list(data.splits.get("training", [])) + list(data.splits.get("validation", []))
    return resolve_cache(cache, items, transform, **kwargs)


LOADERS = ("process", "thread")


def data_loader(dataset, batch_size: int = 1, shuffle: bool = False, num_workers: int = 0, loader: str = "process",
                **kwargs):
    """A MONAI data loader: worker processes (``process``, PyTorch's ``DataLoader``) or a background thread
    (``thread``, MONAI's ``ThreadDataLoader``) that prepares the next batches (augmentation included) while the
    network trains on the current one; with ``num_workers`` > 0 its workers are threads too.

    Args:
        dataset: the dataset.
        batch_size: items per batch.
        shuffle: shuffle every epoch (ignored by the caller when a ``sampler`` is given).
        num_workers: worker processes (``process``) or threads (``thread``).
        loader: ``process`` or ``thread``.
        kwargs: passed on (``sampler``, ``drop_last``, ...).
    """
    from monai.data import DataLoader, ThreadDataLoader

    loader = str(loader).lower()
    if loader == "process":
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=int(num_workers), **kwargs)
    if loader == "thread":
        return ThreadDataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=int(num_workers),
                                use_thread_workers=int(num_workers) > 0, buffer_size=2, **kwargs)
    raise ValueError(f"loader must be one of {LOADERS}, got {loader!r}")


def set_threads(num_threads: int | None = None) -> int:
    """Use every core for intra-op parallelism unless told otherwise; returns the thread count."""
    if num_threads:
        torch.set_num_threads(int(num_threads))
    return torch.get_num_threads()


def screen_items(items, preprocessing=None, skip_unreadable=False, skipped=None) -> list[dict]:
    """``skip_unreadable: true``: the items without unreadable, empty, blank or non-finite images (recorded in
    ``skipped``); else the items unchanged. See :func:`medclass.data.screen_items`."""
    return screen(items, preprocessing, skip=skip_unreadable, skipped=skipped)


def init_distributed() -> None:
    """Join the torchrun process group: nccl on GPUs, gloo on CPU (and set this rank's CUDA device)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def finish_distributed() -> None:
    """Leave the process group once every rank is done.

    Without the barrier, a rank with no files to write tears the group down while rank 0 still saves its
    checkpoints, and gloo aborts that rank (``terminate called without an active exception``).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def distributed(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Wrap a network in DistributedDataParallel on its device."""
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device(device)
    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(network, device_ids=ids)


def saliency_items(source=None, split: str = "test", data_args: dict | None = None, spatial_dims: int = 2) -> list[dict]:
    """Items ``{"image", "id"}`` for the saliency workflow: ``source`` as in :func:`inference_items`, or, when it
    is ``None``, the ``split`` (``train``/``val``/``test``) of the bundle's data."""
    if source is not None and str(source) != "":
        return inference_items(source, data_args=data_args, spatial_dims=spatial_dims)
    try:
        key = canonical_split(split, "saliency_split")
    except ValueError:
        key = None
    if key not in SPLIT_NAMES:
        raise ValueError(f"saliency_split must be train, val or test, got {split!r}")
    if not data_args:
        raise ValueError("the saliency workflow needs an input: set 'input' to an image, a folder or a datalist")
    data = prepare_data(**dict(data_args))
    return [{"image": it["image"], "id": it["id"]} for it in data.splits[key]]
