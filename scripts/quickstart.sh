#!/usr/bin/env bash
# Quick start: install medclass, then train and evaluate the chest X-ray bundle on its offline default data
# (synthetic phantoms, made on first use) and print where the outputs are.
# Extra arguments go to both bundle runs, e.g. `bash scripts/quickstart.sh --max_epochs 2`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck disable=SC1091
source "$root/scripts/install.sh"
bundle="$root/bundles/cxr_classification"
cd "$bundle"
run() {
    python -m monai.bundle run --config_file "['configs/common.yaml','configs/$1.yaml']" \
        --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root "$bundle" "${@:2}"
}
run train --progress_bar false "$@"
run evaluate "$@"
echo
echo "Outputs:"
echo "  best model        $bundle/models/model.pt   (last epoch, for resume: models/last.pt)"
echo "  predictions       $bundle/eval/predictions.csv"
echo "  test metrics      $bundle/eval/metrics.json"
echo "  TensorBoard logs  $bundle/runs   (tensorboard --logdir $bundle/runs)"
python - "$bundle/eval/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"  test mean AUC     {m['mean_auc']:.3f} on {m['n']} images: " +
      ", ".join(f"{k} {v['auc']:.3f}" for k, v in m["per_label"].items() if v["auc"] is not None))
PY
