"""Shared by the tutorials: run one bundle workflow exactly as a user would on the command line."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path


def run_bundle(bundle: Path, workflow: str, overrides: dict, quiet: bool = False) -> None:
    """``python -m monai.bundle run`` of ``bundle``'s workflow: ``configs/inference.yaml`` alone, or with
    ``configs/<workflow>.yaml`` layered over it.

    The command is printed first (so a reader can copy it); ``overrides`` become ``--key value`` (non-strings as
    JSON). ``quiet`` hides the workflow's own output. Raises ``CalledProcessError`` when the workflow fails.
    """
    files = "configs/inference.yaml" if workflow == "inference" else \
        f"['configs/inference.yaml','configs/{workflow}.yaml']"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files,
           "--logging_file", "configs/logging.conf", "--bundle_root", str(bundle)]
    for key, value in overrides.items():
        cmd += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    print(f"\n$ cd {bundle} && python " + " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=bundle, check=True, stdout=subprocess.DEVNULL if quiet else None)
