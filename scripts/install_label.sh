#!/usr/bin/env bash
# Install the MONAI Label server (monailabel 0.8.5) for medclass.label into the active virtual environment
# (otherwise ./.venv, as scripts/install.sh; MEDCLASS_VENV to change), next to medclass.
#
# monailabel 0.8.5 declares dependencies that would replace this environment's torch by a CUDA build, add
# torchvision, downgrade numpy below 2 (pydicom-seg) and pin jsonschema < 4. The server needs none of that to
# serve classification bundles, so this installs monailabel with --no-deps and then only the packages its server
# imports (requirements/label.txt), pinned by requirements/label-constraints.txt and, for everything already
# installed (torch, numpy, monai, pydicom ...), by requirements/constraints.txt: nothing of medclass's
# environment is upgraded or downgraded. pydicom-seg is left out (medclass.label.compat stands in for it).
# Usage: bash scripts/install_label.sh            (or source it to keep the environment active)
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ]; then
    # shellcheck disable=SC1091
    source "$_root/scripts/install.sh" || { return 1 2>/dev/null || exit 1; }
fi
python -c "import medclass" 2>/dev/null || python -m pip install --quiet --disable-pip-version-check \
    -c "$_root/requirements/constraints.txt" -e "$_root" || { echo "medclass install failed" >&2; return 1 2>/dev/null || exit 1; }
_pip=(python -m pip install --quiet --disable-pip-version-check -c "$_root/requirements/constraints.txt"
      -c "$_root/requirements/label-constraints.txt")
echo "installing monailabel 0.8.5 without its declared dependencies; pip's notes that it 'requires' torchvision, sam2," \
     "shapely, ... are expected (segmentation / pathology features medclass does not use)"
"${_pip[@]}" --no-deps monailabel==0.8.5 \
    && "${_pip[@]}" -r "$_root/requirements/label.txt" \
    || { echo "MONAI Label install failed" >&2; return 1 2>/dev/null || exit 1; }
python -c "import medclass.label.server" \
    || { echo "MONAI Label installed but medclass.label.server does not import" >&2; return 1 2>/dev/null || exit 1; }
echo "monailabel $(python -c 'import monailabel; print(monailabel.__version__)') installed in $(python -c 'import sys; print(sys.prefix)')"
