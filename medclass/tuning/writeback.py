"""``medclass tune --write-best``: the best trial's settings become the bundle's values.

Each searched setting's line in ``configs/common.yaml`` gets the best value, in place (the line's own comment
stays), under a comment naming the study, the trial, its validation value and the value it replaces; then
``medclass sync-bundles`` copies the values into the workflows, so the next ``train`` uses them. Nothing is
written silently: :func:`write_best` returns one line per setting saying what changed, and the file is left as it
was when the edit would change anything but those values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from medclass.bundle_tools import VALUES, sync_bundle, yaml_comment_at
from medclass.errors import SettingError
from medclass.files import atomic_text

__all__ = ["write_best", "set_values", "MARK"]

MARK = "# tuned by medclass tune:"


def _flow(value: Any) -> str:
    """``value`` as one line of YAML (flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


def set_values(text: str, values: Mapping[str, Any], note: str, source: str = VALUES) -> str:
    """``text`` (a ``common.yaml``) with each top-level key of ``values`` set to its value on its own line,
    keeping the line's comment, and ``note`` (plus the value replaced) as a comment line above it.

    Raises:
        SettingError: a key is not a one-line top-level value of ``text``, or the result would not read back as
            ``text``'s values with ``values`` over them.
    """
    before = yaml.safe_load(text)
    lines = text.splitlines()
    for key, value in values.items():
        pattern = re.compile(rf"^{re.escape(key)}\s*:")
        at = [i for i, ln in enumerate(lines) if pattern.match(ln)]
        if len(at) != 1:
            raise SettingError(f"{source}: found {len(at)} top-level lines for {key!r}; give the best value on the "
                               "command line instead")
        i = at[0]
        line = lines[i]
        cut = yaml_comment_at(line)
        follows = lines[i + 1] if i + 1 < len(lines) else ""
        if follows[:1] in ("-",) or (follows[:1] in (" ", "\t") and follows.strip()
                                    and not follows.strip().startswith("#")):
            raise SettingError(f"{source}: {key} spans several lines; write it on one line (e.g. {key}: {{}}) to "
                               "have medclass tune set it")
        head = f"{key}: {_flow(value)}"
        comment = line[cut:].strip()
        lines[i] = head + (" " * max(2, cut - len(head)) + comment if comment else "")
        old = _flow(before.get(key)) if isinstance(before, dict) else "?"
        remark = f"{MARK} {note}, was {old}"
        if i > 0 and lines[i - 1].startswith(MARK):
            lines[i - 1] = remark
        else:
            lines.insert(i, remark)
    out = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
    if yaml.safe_load(out) != {**before, **values}:
        raise SettingError(f"{source}: the best values could not be written without changing other values; "
                           "nothing was written")
    return out


def write_best(bundle: str | Path, values: Mapping[str, Any], note: str) -> list[str]:
    """Write ``values`` (top-level settings) into ``bundle/configs/common.yaml`` and sync the bundle's workflows.

    Args:
        bundle: the bundle folder.
        values: ``{setting: best value}``.
        note: who wrote them, e.g. ``study 'cxr' trial 7, val_mean_auc 0.912``.

    Returns:
        One line per setting: ``learning_rate: 0.001 -> 0.0023`` or ``batch_size: 32 (unchanged)``.
    """
    common = Path(bundle) / "configs" / VALUES
    if not common.is_file():
        raise FileNotFoundError(f"{common}: not a medclass bundle (no {VALUES}); nothing was written")
    text = common.read_text(encoding="utf-8")
    current = yaml.safe_load(text) or {}
    changed = {k: v for k, v in values.items() if current.get(k) != v}
    report = [f"{k}: {_flow(current.get(k))} -> {_flow(v)}" if k in changed else f"{k}: {_flow(v)} (unchanged)"
              for k, v in values.items()]
    if changed:
        atomic_text(common, set_values(text, changed, note, str(common)))
        stale = sync_bundle(bundle)
        report.append(f"written to {common}" + (f"; synced {', '.join(stale)}" if stale else ""))
    else:
        report.append(f"{common}: already holds the best values; nothing written")
    return report
