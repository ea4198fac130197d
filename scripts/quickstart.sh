#!/usr/bin/env bash
# Quick start: install medclass, then train and evaluate the chest X-ray bundle on its offline default data
# (synthetic phantoms, made on first use) and print where the outputs are.
# Everything is written into its own folder, ./quickstart (MEDCLASS_QUICKSTART_DIR to change), never into the
# bundle's models/ or eval/: a later training run in the bundle starts clean. Running it again trains anew (the
# previous model is kept as model.previous.pt).
# Extra arguments go to both bundle runs, e.g. `bash scripts/quickstart.sh --max_epochs 2`.
# MEDCLASS_SKIP_INSTALL=1 uses the medclass already installed in the active environment.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${MEDCLASS_SKIP_INSTALL:-}" ]; then
    # shellcheck disable=SC1091
    source "$root/scripts/install.sh"
fi
bundle="$root/bundles/cxr_classification"
out="${MEDCLASS_QUICKSTART_DIR:-$root/quickstart}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$bundle"
run() {
    python -m monai.bundle run --config_file "['configs/inference.yaml','configs/$1.yaml']" \
        --meta_file configs/metadata.json --logging_file configs/logging.conf --bundle_root "$bundle" \
        --dataset_dir "$out/data/phantoms" --ckpt_dir "$out/models" --eval_dir "$out/eval" \
        --log_dir "$out/runs" "${@:2}"
}
run train --progress_bar false --resume false "$@"
run evaluate "$@"
echo
echo "Outputs (all in $out):"
echo "  best model        $out/models/model.pt   (last epoch: models/last.pt)"
echo "  predictions       $out/eval/predictions.csv"
echo "  test metrics      $out/eval/metrics.json"
echo "  TensorBoard logs  $out/runs   (tensorboard --logdir $out/runs)"
python - "$out/eval/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
labels = m.get("mean_auc_labels") or []
head = (f"{m['mean_auc']:.3f} over the {len(labels)} labels with enough test cases" if m.get("mean_auc") is not None
        else "not estimable (too few test positives or negatives for every label)")
print(f"  test mean AUC     {head}, on {m['n']} images: " +
      ", ".join(f"{k} {v['auc']:.3f}" for k, v in m["per_label"].items() if v["auc"] is not None))
PY
