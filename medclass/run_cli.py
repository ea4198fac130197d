"""``medclass run WORKFLOW [--key value ...]``: run a bundle workflow as ``python -m monai.bundle run`` does, and
end a failed run with one short paragraph instead of a traceback.

It runs ``configs/inference.yaml`` with ``configs/WORKFLOW.yaml`` layered over it (``inference``: alone) of the
bundle in the working directory (or of ``--bundle_root``), with ``configs/metadata.json`` and
``configs/logging.conf``; ``--key value`` pairs override config values exactly as on the ``monai.bundle run``
command line. On a mistake it prints ``medclass: error: ...`` (what, which file or setting, how to fix it) and
writes the full traceback to ``logs/medclass-error.log`` in the bundle (``--debug`` prints it too); Ctrl-C stops
with one line saying what was saved and how to resume.

``medclass run train --ensemble "{members: 3, by: seed | fold}"`` trains an ensemble, one member after the other,
into one model file (:mod:`medclass.ensembles`).
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from medclass.bundle_tools import WORKFLOW_FILES, config_files
from medclass.ensembles import train_ensemble
from medclass.errors import console_without_tracebacks, interrupt_message, user_message
from medclass.logconf import check_logging_file

__all__ = ["main", "parse_overrides", "WORKFLOW_FILES"]

logger = logging.getLogger(__name__)

ERROR_LOG = Path("logs") / "medclass-error.log"
USAGE = ("usage: medclass run {" + ",".join(WORKFLOW_FILES) + "} [--debug] [--KEY VALUE ...]\n"
         "Runs configs/inference.yaml + configs/WORKFLOW.yaml of the bundle in the working directory (or "
         "--bundle_root), e.g. medclass run train --max_epochs 2")


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``["--max_epochs", "2", "--image_size=[64,64]"]`` -> ``{"max_epochs": 2, "image_size": [64, 64]}``.

    Values are parsed as ``monai.bundle run`` parses them (``fire``): numbers, lists, dicts and ``None`` /
    ``True`` / ``False`` become Python values; ``null`` / ``none`` and ``true`` / ``false`` too, as in the YAML
    configs; anything else stays a string. Unlike ``monai.bundle run``, a ``None`` value is passed on
    (``--width None``: the architecture's default width), not dropped.

    Raises:
        ValueError: an argument that is not ``--key value`` or ``--key=value``.
    """
    from fire.parser import DefaultParseValue

    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--") or len(a) == 2:
            raise ValueError(f"unexpected argument {a!r}: give settings as --key value (e.g. --max_epochs 2)")
        if "=" in a:
            key, value = a[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ValueError(f"{a} needs a value (e.g. {a} 2)")
            key, value = a[2:], args[i + 1]
            i += 2
        out[key] = _yaml_words(DefaultParseValue(value))
    return out


def _yaml_words(value: Any) -> Any:
    """``null`` / ``none`` / ``~`` -> ``None`` and ``true`` / ``false`` -> bools, as the YAML configs write them
    (``fire`` leaves them strings; it turns only ``None`` / ``True`` / ``False`` into Python values)."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("null", "none", "~"):
            return None
        if word in ("true", "false"):
            return word == "true"
    return value


def _write_error_log(bundle: Path, argv: list[str], text: str) -> str:
    header = f"{datetime.datetime.now().isoformat(timespec='seconds')} medclass run {' '.join(argv)}\n"
    for path in ((bundle / ERROR_LOG).resolve(), Path(tempfile.gettempdir()) / f"medclass-error-{os.getpid()}.log"):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(header + text, encoding="utf-8")
            return str(path)
        except OSError:
            continue
    return "(could not be written)"


def main(argv: list[str]) -> int:
    """Run the workflow; returns the exit status (0 done, 1 error, 2 usage, 130 Ctrl-C)."""
    argv = list(argv)
    debug = "--debug" in argv
    args = [a for a in argv if a != "--debug"]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    workflow, rest = args[0], args[1:]
    if workflow not in WORKFLOW_FILES:
        print(f"medclass: error: unknown workflow {workflow!r}; choose one of {', '.join(WORKFLOW_FILES)}\n{USAGE}",
              file=sys.stderr)
        return 2
    try:
        overrides = parse_overrides(rest)
    except ValueError as exc:
        print(f"medclass: error: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    bundle = Path(str(overrides.get("bundle_root", ".")))
    try:
        if "ensemble" in overrides:
            if workflow != "train":
                raise ValueError(f"--ensemble trains an ensemble: use it with medclass run train (the {workflow} "
                                 "workflow uses an ensemble model file as it uses a single model)")
            train_ensemble(bundle, overrides, lambda member: _run(bundle, workflow, member, debug))
            return 0
        return _run(bundle, workflow, overrides, debug)
    except KeyboardInterrupt:
        # MONAI runs the workflow inside eval(); a KeyboardInterrupt leaving an eval() marks it "unhandled", and
        # CPython then ends the process by SIGINT instead of with our exit status. A later eval() clears the mark.
        eval("None")  # noqa: S307  (a constant, no input)
        print(interrupt_message(), file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # every failure ends in one paragraph; the traceback goes to the log
        text = traceback.format_exc()
        log_file = _write_error_log(bundle, argv, text)
        if debug:
            print(text, file=sys.stderr)
        sys.stdout.flush()
        print(user_message(exc, log_file=log_file, debug_hint=not debug), file=sys.stderr, flush=True)
        return 1


def _run(bundle: Path, workflow: str, overrides: dict[str, Any], debug: bool) -> int:
    from monai.bundle import ConfigWorkflow

    if not (bundle / "configs" / "inference.yaml").is_file():
        raise FileNotFoundError(
            f"{bundle.resolve() / 'configs' / 'inference.yaml'} not found: run medclass run from a bundle folder "
            "(e.g. bundles/cxr_classification) or give --bundle_root BUNDLE")
    files = config_files(bundle, *WORKFLOW_FILES[workflow])
    logging_file = overrides.pop("logging_file", None) or (bundle / "configs" / "logging.conf")
    meta_file = overrides.pop("meta_file", None) or (bundle / "configs" / "metadata.json")
    if logging_file and Path(logging_file).is_file():
        ckpt_dir = overrides.get("ckpt_dir", bundle / "models")
        check_logging_file(logging_file, forbidden=[ckpt_dir, bundle / "models"])
    else:
        logging_file = False
    if not debug:
        console_without_tracebacks()
    wf = ConfigWorkflow(config_file=files, meta_file=str(meta_file), logging_file=str(logging_file)
                        if logging_file else False, workflow_type="train" if "train" in workflow else "inference",
                        **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()
    return 0
