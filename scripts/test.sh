#!/usr/bin/env bash
# Install medclass with its test extras (dev; onnx: the export and ONNX Runtime tests; tune: optuna for medclass
# tune) and the MONAI Label server
# (scripts/install_label.sh), then run the
# default test suite (no GPU, about 15 minutes on 2 cores; `-m heavy` runs the long benchmark/tutorial runs it leaves out).
# Real-data tests read MEDCLASS_DATA (default ../shared/data) and skip with a reason where it is absent.
# Extra arguments go to pytest. Exit status: pytest's, except 5 (no test collected), reported and failed.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck disable=SC1091
source "$root/scripts/install.sh" dev,onnx,tune || exit 1
# the MONAI Label server for tests/label/ (monailabel --no-deps + its server's pinned runtime packages)
bash "$root/scripts/install_label.sh" || exit 1
cd "$root"
export MEDCLASS_DATA="${MEDCLASS_DATA:-$root/../shared/data}"
python -m pytest -q -rs --durations=15 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: treated as a failure (the suite must run)" >&2
    exit 1
fi
exit "$rc"
