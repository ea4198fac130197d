"""The interface every datalist source implements: labelled records (:meth:`DatalistSource.read`) and, where the
source can list images without labels, the image items for inference (:meth:`DatalistSource.images`)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from medclass.data.datalist import Datalist

__all__ = ["DatalistSource"]


class DatalistSource(ABC):
    """A reader of one kind of dataset description.

    Every source returns the same records: a :class:`~medclass.data.datalist.Datalist` whose items are
    ``{"image", "label", "id", ...}`` dicts (:mod:`medclass.data.datalist`), and, from :meth:`images`,
    ``[{"image", "id"}]``. :func:`medclass.data.load_datalist` picks the source with :meth:`accepts`.

    Args:
        location: the file or folder (or, for JSON, an already-parsed document).
        dataset_dir: the folder relative image paths start from (default: the file's folder).
        check_files: check up front that every image (and mask) file exists.
        options: source-specific options (:attr:`option_names`).

    Raises:
        TypeError: an option this source does not take.
    """

    #: how messages name this kind of source
    kind: ClassVar[str] = ""
    #: file name endings it reads (matched ignoring case); a folder source has none
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: the options it takes
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, location: str | os.PathLike | Mapping[str, Any], *,
                 dataset_dir: str | os.PathLike | None = None, check_files: bool = True, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            hint = f"; {self.kind} options are {', '.join(self.option_names)}" if self.option_names else ""
            raise TypeError(f"load_datalist: options {unknown} do not apply to a {self.kind} source{hint}")
        self.location = location if isinstance(location, Mapping) else Path(location).expanduser()
        self.dataset_dir = Path(dataset_dir).expanduser() if dataset_dir is not None else None
        self.check_files = bool(check_files)
        self.options = dict(options)

    @classmethod
    def accepts(cls, location: Any) -> bool:
        """Whether this source reads ``location`` (by its file name ending)."""
        return isinstance(location, (str, os.PathLike)) and str(location).lower().endswith(cls.suffixes) \
            and bool(cls.suffixes)

    @property
    def source(self) -> str:
        """The location as messages name it."""
        return str(self.location)

    def base(self) -> str:
        """The absolute folder relative image paths start from: ``dataset_dir``, else the file's folder."""
        folder = self.dataset_dir if self.dataset_dir is not None else Path(self.location).parent
        return str(folder.expanduser().resolve())

    def list_base(self) -> str:
        """The folder an image list's relative paths start from: ``dataset_dir``, else the folder of the file the
        path leads to (a link's target)."""
        folder = self.dataset_dir if self.dataset_dir is not None else Path(self.location).resolve().parent
        return str(folder.resolve())

    @abstractmethod
    def read(self, label_names: Sequence[str] | None = None, task: str | None = None) -> Datalist:
        """The labelled records, split as the source splits them (or the single split ``"all"``).

        Args:
            label_names: the labels/classes and their order in the label vector; inferred when omitted.
            task: ``"multilabel"``, ``"binary"`` or ``"multiclass"``; inferred when omitted.
        """

    def images(self, image_key: str | None = None) -> list[dict[str, Any]]:
        """``[{"image": path or array, "id": str}]`` of every image the source lists, labels ignored.

        Raises:
            ValueError: this kind of source lists no images without labels.
        """
        raise ValueError(f"{self.source}: a {self.kind} source is not an image list; give a CSV, JSON or npz file")
