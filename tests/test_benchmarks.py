"""benchmarks/quality.py accepts any MedMNIST v2 2D npz (binary, multi-class, multi-label) with one recipe."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from medclass.networks.modelfile import read_model_record

ROOT = Path(__file__).resolve().parent.parent


def _bench(name: str, module_name: str | None = None):
    """benchmarks/<name>.py as a module (the benchmarks folder on sys.path for its own imports)."""
    folder = str(ROOT / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name = module_name or name
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = mod
    spec.loader.exec_module(mod)
    return mod


def _quality():
    return _bench("quality")


def _npz(path: Path, labels_of) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        y = labels_of(rng, n)
        x = rng.integers(0, 80, (n, 28, 28)).astype(np.uint8)
        first = y if y.shape[1] == 1 else y[:, :1]
        x[:, 4:12, 4:12] += (first[:, :, None] * 100 // max(1, y.max())).astype(np.uint8)  # learnable signal
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y.astype(np.uint8)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "kind,labels_of,n_labels",
    [
        ("multiclass", lambda rng, n: rng.integers(0, 3, (n, 1)), None),
        ("multilabel", lambda rng, n: rng.integers(0, 2, (n, 4)), 4),
    ],
)
def test_quality_npz(tmp_path, kind, labels_of, n_labels):
    npz = _npz(tmp_path / f"toy{kind}.npz", labels_of)
    # 20 test images: min_positives 2 so that every label enters the headline mean AUC
    res = _quality().main(["--npz", str(npz), "--epochs", "1", "--workdir", str(tmp_path / "w"),
                           "--set", "width", "8", "--set", "batch_size", "16", "--set", "min_positives", "2"])
    assert res["dataset"] == f"toy{kind}" and res["epochs"] == 1 and res["n_test"] == 20
    assert res["test_auc_labels"] == (n_labels or 3) and res["test_auc_excluded"] == []
    assert 0.0 <= res["test_auc"] <= 1.0 and 0.0 <= res["test_acc"] <= 1.0
    if n_labels:
        assert len(res["per_label_auc"]) == n_labels
    else:  # multi-class: one-vs-rest AUC per class
        assert len(res["per_label_auc"]) == 3
    lo, hi = res["test_auc_ci95"]
    assert lo <= res["test_auc"] <= hi
    assert 0.0 <= res["test_ece"] <= 1.0
    assert 0.0 <= res["test_sens_val_youden"] <= 1.0 and 0.0 <= res["test_spec_val_youden"] <= 1.0
    # re-evaluating the trained workdir without training gives the same figures
    again = _quality().main(["--npz", str(npz), "--evaluate-only", "--workdir", str(tmp_path / "w"),
                             "--set", "width", "8", "--set", "batch_size", "16", "--set", "min_positives", "2"])
    assert again["epochs"] is None and again["evaluate_only"] is True
    for key in ("test_auc", "test_auc_ci95", "test_acc", "test_sens_val_youden", "test_spec_val_youden", "test_ece"):
        assert again[key] == res[key], key


@pytest.mark.parametrize("name", ["adrenalmnist3d.npz", "adrenalmnist3d_64.npz"])
def test_quality_3d_npz_through_the_volume_bundle(real_data, tmp_path, name):
    """Real AdrenalMNIST3D volumes (a subset, to stay quick) go through the 3D bundle via --npz."""
    from tests.conftest import need

    src = np.load(need(real_data, f"medmnist/{name}"))
    n = {"train": 64, "val": 24, "test": 32}
    subset = {}
    for split, k in n.items():
        labels = src[f"{split}_labels"]
        keep = np.concatenate([np.flatnonzero(labels[:, 0] == c)[: k // 2] for c in (0, 1)])  # both classes
        subset[f"{split}_images"], subset[f"{split}_labels"] = src[f"{split}_images"][keep], labels[keep]
    npz = tmp_path / name
    np.savez(npz, **subset)
    res = _quality().main(["--npz", str(npz), "--epochs", "1", "--workdir", str(tmp_path / "w"),
                           "--set", "width", "4", "--set", "batch_size", "16"])
    size = src["train_images"].shape[1]
    assert res["bundle"] == "volume_classification" and res["image_size"] == [size] * 3
    assert res["n_test"] == n["test"] and 0.0 <= res["test_auc"] <= 1.0
    # bf16 + channels_last_3d can give infinite gradients from the first step: at most one fallback to fp32
    assert res["precision_fallbacks"] <= 1 and res["nonfinite_steps"] <= 3


@pytest.mark.heavy
def test_speed_benchmark_runs_every_phase_on_real_data(real_data, tmp_path):
    """benchmarks/speed.py --quick: every phase runs on the real sets; the ratios are the phases' figures."""
    import json
    import subprocess

    from tests.conftest import need

    need(real_data, "medmnist/pneumoniamnist.npz")
    need(real_data, "dicom/chest_xray")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--dims", "2",
                          "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    r = out["2d"]
    a, b, c = (r[k]["images_per_s"] for k in ("a_bare", "b_bundle", "c_plain_monai"))
    assert min(a, b, c) > 0
    assert r["b_over_a"] == round(b / a, 3) and r["b_over_c"] == round(b / c, 3) == out["b_over_c_2d"]
    assert r["b_bundle"]["train_images"] == 64 and r["a_bare"]["train_gflop_per_image"] > 0
    assert out["peak"]["bf16_matmul_gflops"] > 0 and r["fraction_of_bf16_matmul_peak"] > 0
    assert out["latency"]["file_to_probs_ms"] > 0 and out["latency"]["forward_ms"] > 0
    assert all(r[k]["peak_rss_mb"] > 100 for k in ("a_bare", "b_bundle", "c_plain_monai"))


def test_speed_epoch_table_gives_seconds_per_1000_images(real_data, tmp_path):
    """benchmarks/speed.py --epoch-table (the README's time guidance): one row per (arch, dims, size) asked for, at
    the bundle's width, seconds per 1,000 images = 1000 / images per second."""
    import json
    import subprocess

    from tests.conftest import need

    need(real_data, "medmnist/pneumoniamnist.npz")
    need(real_data, "medmnist/adrenalmnist3d_64.npz")
    table = [["resnet18", 2, 32], ["resnet18", 3, 16]]
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--epoch-table", "--stem", "auto",
                          "--table", json.dumps(table), "--table-steps", "1", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert [[r["arch"], r["spatial_dims"], r["image_size"][0]] for r in out["rows"]] == table
    for r in out["rows"]:
        assert r["width"] == 32 and r["timed_steps"] == 1
        assert r["image_size"] == [r["image_size"][0]] * r["spatial_dims"]
        assert r["seconds_per_1000_images"] == pytest.approx(1000 / r["images_per_s"], rel=1e-2, abs=0.051)  # printed to 0.1 s
        assert r["seconds_per_1000_images_best_step"] <= r["seconds_per_1000_images"] * 1.01  # one step: equal
    assert len(out["load_average_1_5_15"]) == 3 and "CPU cores" in out["machine"]


def test_augment_benchmark_runs(capsys):
    """benchmarks/augment.py --quick: per-item and batched augmentation are both timed for 2D and 3D."""
    import json

    res = _bench("augment", "augment_bench").main(["--quick", "--device", "cpu"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res
    for dims, shape in (("2d", [4, 1, 16, 16]), ("3d", [4, 1, 16, 16, 16])):
        r = res[dims]
        assert r["shape"] == shape and r["device"] == "cpu"
        assert min(r["sample_s"], r["sample_tail_s"], r["batch_s"], r["batch_all_s"]) > 0
        assert r["sample_over_batch"] == pytest.approx(r["sample_s"] / r["batch_s"], rel=1e-2)


@pytest.fixture(scope="module")
def tiny_saliency(real_data, tmp_path_factory):
    """benchmarks/saliency.py --tiny --gradcam-layers backbone.layer4 in one work folder: (folder, its JSON)."""
    import json
    import subprocess

    from tests.conftest import need

    need(real_data, "medmnist/pneumoniamnist.npz")
    need(real_data, "medmnist/adrenalmnist3d.npz")
    work = tmp_path_factory.mktemp("saliency")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "saliency.py"), "--tiny", "--workdir",
                          str(work), "--gradcam-layers", "backbone.layer4"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return work, json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.heavy
def test_saliency_benchmark_scores_other_gradcam_layers_against_the_same_baselines(tiny_saliency):
    """benchmarks/saliency.py --tiny --gradcam-layers: Grad-CAM at a named layer is one more method, scored on
    the same maps' cases and against the same random deletion baselines as the default layer."""
    import subprocess

    tmp_path, out = tiny_saliency
    extra = "gradcam@backbone.layer4"
    assert out["methods"][-1] == extra
    for dims in ("2d", "3d"):
        pointing, deletion = out[f"pointing_{dims}"], out[f"deletion_{dims}"]
        assert pointing[extra]["n"] == pointing["gradcam"]["n"] == pointing["n_maps"] > 0
        assert set(pointing[extra]["per_label"]) == set(pointing["gradcam"]["per_label"])
        # the same scattered random pixels for every method (one seed per method)
        drops = {deletion[m]["random_drop"] for m in (extra, "gradcam", "vanilla")}
        assert len(drops) == 1, drops
        assert out[f"cost_{dims}"][extra]["x_forward"] > 0
    # layer4 (2^3 at 28^3) and layer3 (4^3) give different maps, so different salient regions
    assert out["deletion_3d"][extra]["salient_drop"] != out["deletion_3d"]["gradcam"]["salient_drop"]
    # the evenly tiled upsampling (MONAI / pytorch-grad-cam) is scored by default as the same-run baseline of
    # the receptive-field placement: same cases, other maps
    for base in ("gradcam", "gradcam++"):
        assert f"{base}-uniform" in out["methods"]
        assert out["pointing_3d"][f"{base}-uniform"]["n"] == out["pointing_3d"][base]["n"]
        assert out["deletion_3d"][f"{base}-uniform"]["salient_drop"] != out["deletion_3d"][base]["salient_drop"]
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "saliency.py"), "--tiny", "--workdir",
                          str(tmp_path), "--reuse", "--skip", "deletion2d", "deletion3d", "pointing3d",
                          "--gradcam-layers", "backbone.nope"], capture_output=True, text=True, timeout=900)
    assert bad.returncode != 0 and "backbone.nope" in bad.stderr and "valid names" in bad.stderr


@pytest.mark.heavy
def test_cam_variants_scores_the_products_gradcam_and_finer_lattices(tiny_saliency):
    """benchmarks/cam_variants.py on the tiny phantom model: its plain Grad-CAM is the product's (same cases, same
    peaks as benchmarks/saliency.py), a stitched lattice and a product are scored on the same cases, and a step
    that does not divide the layer's stride is refused."""
    import json
    import subprocess

    work, out = tiny_saliency
    cmd = [sys.executable, str(ROOT / "benchmarks" / "cam_variants.py"), "--workdir", str(work), "--tiny",
           "--n-pointing", "4"]
    res = subprocess.run(cmd + ["--variants", "gradcam@backbone.layer3", "gradcam@backbone.layer3/4",
                                "gradcam@backbone.layer3*layercam@backbone.layer2"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    ref = out["pointing_3d"]["gradcam"]
    assert got["n_maps"] == out["pointing_3d"]["n_maps"] == ref["n"]
    for key in ("hit_rate", "median_peak_to_mask_px", "per_label"):
        assert got["gradcam@backbone.layer3"][key] == ref[key], key
    for spec in ("gradcam@backbone.layer3/4", "gradcam@backbone.layer3*layercam@backbone.layer2"):
        assert got[spec]["n"] == ref["n"] and set(got[spec]["per_label"]) == set(ref["per_label"])
    bad = subprocess.run(cmd + ["--variants", "gradcam@backbone.layer3/3"], capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode != 0 and "must divide the layer's stride 8" in bad.stderr


def test_shift_and_stitch_places_each_shifted_cam_at_its_cell_centre():
    """Shift-and-stitch (benchmarks/cam_variants.py): the fine lattice is translation-equivariant. Moving the image
    by one step moves every stitched value by one lattice index, exactly, for the values that came from a shifted
    copy (replicate padding composes); a wrong index order or offset breaks it. The lattice positions are the
    product's traced cell centres of each shifted copy."""
    from medclass.networks import build_classifier
    from medclass.saliency import cell_centres

    cv = _bench("cam_variants")
    torch = cv.torch
    torch.manual_seed(0)
    net = build_classifier("resnet18", 2, 1, 2, image_size=(64, 48), width=4, stem="medium").eval()  # stride 8
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 64, 48, generator=gen)
    idx = torch.tensor([[0], [1]])
    step, layer = 2, "backbone.layer3"
    fine, geo = cv.stitched_cam(net, x, idx, layer, "gradcam", step)
    n = 8 // step
    assert fine.shape[1:] == (8 * n, 6 * n) and all(s == step for s, _ in geo)
    moved, geo_m = cv.stitched_cam(net, cv._translated(x, (step, step)), idx, layer, "gradcam", step)
    assert geo_m == geo
    keep = (torch.arange(fine.shape[1]) % n != n - 1)[:, None] & (torch.arange(fine.shape[2]) % n != n - 1)[None]
    shifted = moved[:, 1:, 1:][:, keep[:-1, :-1]]
    assert fine.abs().max() > 0
    torch.testing.assert_close(shifted, fine[:, :-1, :-1][:, keep[:-1, :-1]])
    # each copy's cells sit at the product's cell centres of that copy, moved back by its shift
    for k in ((0, 0), (1, 3), (3, 2)):
        xs = cv._translated(x, (k[0] * step, k[1] * step))
        centres = cell_centres(net, xs, layer)
        raw, _ = cv.raw_cam(net, xs, idx, layer, "gradcam")
        for ax in range(2):
            f = [n * j + n - 1 - k[ax] for j in range(len(centres[ax]))]
            pos = [geo[ax][1] + geo[ax][0] * fi for fi in f]
            assert pos == pytest.approx([c - k[ax] * step for c in centres[ax]])
        f0 = slice(n - 1 - k[0], None, n)
        f1 = slice(n - 1 - k[1], None, n)
        torch.testing.assert_close(fine[:, f0, f1], raw)


def test_saliency_benchmark_method_names_pick_the_cam_layer_and_placement():
    """benchmarks/saliency.py method names: M@LAYER sets the CAM's layer for Grad-CAM and Grad-CAM++, -uniform the
    even-tiling placement; other methods keep their own settings."""
    kw = _bench("saliency", "saliency_benchmark").method_kwargs
    assert kw("gradcam++@backbone.layer2", (48, 48, 48)) == {"method": "gradcam++", "target_layer": "backbone.layer2"}
    assert kw("gradcam@backbone.layer4", (28, 28)) == {"method": "gradcam", "target_layer": "backbone.layer4"}
    assert kw("gradcam++@backbone.layer2-uniform", (48, 48, 48)) == {
        "method": "gradcam++", "target_layer": "backbone.layer2", "upsample": "uniform"}
    assert kw("gradcam++", (28, 28)) == {"method": "gradcam++"}
    assert kw("occlusion", (48, 48, 48)) == {"window": [12, 12, 12], "stride": [12, 12, 12]}


def test_label_load_benchmark_against_a_baseline_commit(real_data, tmp_path, capsys):
    """benchmarks/label_load.py --quick --baseline-ref HEAD: two real servers measured in one run, every call
    answered, the ratio computed from the two throughputs."""
    import json

    pytest.importorskip("monailabel", reason="MONAI Label is not installed (bash scripts/install_label.sh)")
    from tests.conftest import need

    need(real_data, "dicom/chest_xray/RG1_J2KI.dcm")
    res = _bench("label_load", "label_load_bench").main(["--quick", "--workdir", str(tmp_path),
                                                          "--baseline-ref", "HEAD"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res
    assert res["images"] == 6 and [s["server"] for s in res["servers"]] == ["baseline_HEAD", "current"]
    for s in res["servers"]:
        assert s["infer_status"] == {"200": 12} and s["failed"] == 0 and s["info"]["calls"] >= 1
        assert s["throughput_rps"] > 0 and s["infer"]["p50_ms"] <= s["infer"]["p95_ms"] <= s["infer"]["p99_ms"]
    base, cur = res["servers"]
    assert res["throughput_ratio"] == round(cur["throughput_rps"] / base["throughput_rps"], 2)
    assert (tmp_path / "baseline_src" / "medclass" / "label" / "server.py").is_file()  # the commit's own tree


@pytest.mark.heavy
def test_scale_benchmark_measures_each_cache_in_its_own_process(tmp_path, capsys):
    """benchmarks/scale.py --quick (2D only): the packed memory cache costs less per item than the float32
    baseline measured in the same run, auto resolves to disk under a 1 MB budget, every run trains."""
    import json

    res = _bench("scale", "scale_bench").main(["--quick", "--workdir", str(tmp_path), "--sizes-3d",
                                               "--modes", "memory_float32", "memory", "auto"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res
    runs = {r["cache"]: r for r in res["runs"]}
    assert set(runs) == {"memory_float32", "memory", "auto"} and all(r["n"] == 64 for r in runs.values())
    assert runs["memory"]["mb_per_item"] < runs["memory_float32"]["mb_per_item"]
    assert runs["memory"]["cache_dtype"] == "uint8" and runs["auto"]["resolved"] == "disk"
    assert all(r["images_per_s"] > 0 and 0 <= r["data_wait_share"] <= 1 for r in runs.values())
    assert res["projection_112k_gb"]["memory"] < res["projection_112k_gb"]["memory_float32"]
    assert (tmp_path / "scale.png").is_file()


def test_latency_benchmark_times_every_path_against_the_engine(real_data, tmp_path):
    """benchmarks/latency.py --quick: the real chest X-ray DICOM through every path (engine, MONAI Label app,
    inference and saliency workflows, ONNX Runtime), each ratio over the engine of the same run."""
    import json
    import subprocess

    from tests.conftest import need

    need(real_data, "dicom/chest_xray")
    pytest.importorskip("onnxruntime", reason="onnxruntime is in the [onnx] extra, which CI installs")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "latency.py"), "--quick", "--arch", "resnet18",
                          "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    paths = out["results"]["resnet18"]
    assert set(paths) == {"engine", "engine-fp32", "app", "workflow", "onnxruntime", "workflow-onnxruntime"}
    base = paths["engine"]
    for name, row in paths.items():
        assert row["probs"]["n"] == 3 and 0 < row["probs"]["p50_ms"] <= row["probs"]["p95_ms"]
        assert row["ratio"]["probs"] == round(row["probs"]["p50_ms"] / base["probs"]["p50_ms"], 2)
        assert any(line.startswith("resnet18") and f" {name} " in line for line in lines), name
        if "onnxruntime" in name:
            assert row["probs_gradcam"] is None  # no gradients on ONNX Runtime: not timed, shown as n/a
        else:
            assert row["probs_gradcam"]["p50_ms"] > 0
    assert out["goals"]["onnxruntime_vs_torch_p50"]["resnet18"]["vs_engine"] == round(
        paths["onnxruntime"]["probs"]["p50_ms"] / base["probs"]["p50_ms"], 2)
    assert out["image_size"] == 64 and out["runs"] == 3


def test_transfer_benchmark_pretrains_on_mednist_and_fine_tunes_against_scratch(real_data, tmp_path, capsys):
    """benchmarks/transfer.py --quick on real data (MedNIST subset -> PneumoniaMNIST subset): the source model is
    trained, the frozen run starts from its backbone and keeps it, the table states the gap-closure verdict."""
    import json

    import torch

    from tests.conftest import need

    need(real_data, "mednist/MedNIST_repacked.tar.gz")
    need(real_data, "medmnist/pneumoniamnist.npz")
    res = _bench("transfer", "transfer_bench").main([
        "--quick", "--targets", "pneumoniamnist", "--seeds", "0", "--fractions", "0.2", "1",
        "--variants", "scratch", "frozen", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1])["runs"] == res["runs"]
    runs = {(r["fraction"], r["variant"]): r for r in res["runs"]}
    assert set(runs) == {(0.2, "scratch"), (0.2, "frozen"), (1.0, "scratch"), (1.0, "frozen")}
    assert runs[(0.2, "scratch")]["n_train"] < runs[(1.0, "scratch")]["n_train"] == 120
    for r in runs.values():
        assert r["epochs"] == 1 and r["n_test"] == 120 and 0.0 <= r["test_auc"] <= 1.0
        lo, hi = r["test_auc_ci95"]
        assert lo <= r["test_auc"] <= hi and r["train_seconds"] > 0
    pre = res["pretraining"]["pneumoniamnist"]
    assert pre["classes"] == ["AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT"]
    assert pre["image_size"] == [28, 28] and pre["epochs"] == 1
    # the frozen run's backbone is the MedNIST model's (frozen: weights and BatchNorm statistics unchanged), with
    # a new 1-output head; the scratch run's is not
    source = torch.load(tmp_path / "pretrain_28px" / "models" / "model.pt", weights_only=True)
    frozen = torch.load(tmp_path / "pneumoniamnist" / "1" / "frozen" / "seed0" / "models" / "model.pt",
                        weights_only=True)
    scratch = torch.load(tmp_path / "pneumoniamnist" / "1" / "scratch" / "seed0" / "models" / "model.pt",
                         weights_only=True)
    for key in ("backbone.conv1.weight", "backbone.layer4.1.bn2.running_var"):
        assert torch.equal(frozen[key], source[key]) and not torch.equal(scratch[key], source[key])
    assert frozen["backbone.fc.weight"].shape[0] == 1 and source["backbone.fc.weight"].shape[0] == 6
    # the linear probe learns at --probe-lr-scale (10) times the recipe's rate, the other variants at the recipe's
    lr = {v: read_model_record(tmp_path / "pneumoniamnist" / "1" / v / "seed0" / "models" / "model.pt")
          ["fingerprint"]["settings"]["learning_rate"] for v in ("frozen", "scratch")}
    assert lr["frozen"] == pytest.approx(10 * lr["scratch"])
    verdict = res["gap_closure"]["pneumoniamnist/frozen"]
    assert "closes" in out or "not estimable" in out
    assert verdict["closed"] is None or verdict["half"] == (verdict["closed"] >= 0.5)


@pytest.mark.slow
def test_quality_ensemble_and_tta_print_each_configuration_with_its_time(tmp_path, capsys):
    """--ensemble 2 --tta: single, single+TTA, ensemble, ensemble+TTA on the same test split, each timed."""
    npz = _npz(tmp_path / "toy.npz", lambda rng, n: rng.integers(0, 2, (n, 1)))
    res = _quality().main(["--npz", str(npz), "--epochs", "1", "--workdir", str(tmp_path / "w"), "--ensemble", "2",
                           "--tta", "--bootstrap", "20", "--set", "width", "8", "--set", "batch_size", "16",
                           "--set", "min_positives", "2"])
    configs = {c["config"]: c for c in res["configurations"]}
    assert list(configs) == ["single", "ensemble2", "single+tta_flip", "ensemble2+tta_flip"]
    assert res["epochs"] == [1, 1] and configs["ensemble2"]["train_seconds"] > configs["single"]["train_seconds"] > 0
    for c in configs.values():
        assert 0.0 <= c["test_auc"] <= 1.0 and c["inference_ms_per_image"] > 0
    assert "referral_auc_0_10_20" not in configs["single"]  # a single model without TTA has no uncertainty
    assert len(configs["ensemble2"]["referral_auc_0_10_20"]) == 3
    printed = capsys.readouterr().out
    assert "ensemble2+tta_flip" in printed and "infer ms/img" in printed
    # the plain configurations are evaluated last: the model files keep their thresholds and no TTA
    models = tmp_path / "w" / "models"
    for model in (models / "model.pt", models / "members" / "member_0" / "model.pt"):
        assert str(read_model_record(model)["operating_points"].get("tta") or "none") == "none"


@pytest.mark.slow
def test_quality_seed_ensembles_reuse_members_and_summarise_each_configuration(tmp_path, capsys):
    """--seeds 2 --ensemble 2: seed 1's ensemble reuses the member seed 0 trained with seed 1 (3 trainings, not 4),
    and the last line gives each configuration's mean over the seeds."""
    npz = _npz(tmp_path / "toy.npz", lambda rng, n: rng.integers(0, 2, (n, 1)))
    work = tmp_path / "w"
    res = _quality().main(["--npz", str(npz), "--epochs", "1", "--workdir", str(work), "--seeds", "2", "--ensemble",
                           "2", "--bootstrap", "20", "--set", "width", "8", "--set", "batch_size", "16",
                           "--set", "min_positives", "2"])
    runs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"dataset"')][:2]
    assert [r["reused_members"] for r in runs] == [[], [0]]
    import torch

    # the same weights (the "single" evaluation of seed 1 wrote its own thresholds into its copy)
    reused, trained = (torch.load(work / f"seed{s}" / "models" / "members" / f"member_{m}" / "model.pt",
                                  weights_only=True) for s, m in ((1, 0), (0, 1)))
    weights = [k for k, v in trained.items() if k.endswith((".weight", ".bias")) and isinstance(v, torch.Tensor)]
    assert weights and all(torch.equal(reused[k], trained[k]) for k in weights)
    assert runs[1]["member_train_seconds"][0] == runs[0]["member_train_seconds"][1]  # its cost is still counted
    assert set(res["configurations"]) == {"single", "ensemble2"}
    auc = res["configurations"]["ensemble2"]["test_auc"]
    assert auc["n"] == 2 and auc["min"] <= auc["mean"] <= auc["max"]
    assert auc["mean"] == pytest.approx(np.mean([next(c for c in r["configurations"] if c["config"] == "ensemble2")
                                                 ["test_auc"] for r in runs]), abs=1e-4)
