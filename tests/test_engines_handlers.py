"""Engines (precision, non-finite guard) and handlers (checkpoints/resume, early stop, predictions) on a tiny model."""

import csv
import json

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.handlers import ValidationHandler
from monai.transforms import Activationsd

from medclass.engines import Evaluator, Trainer, resolve_precision
from medclass.errors import RunMismatchError
from medclass.handlers import CheckpointManager, EarlyStopping, LrSchedule, MeanAUC, PredictionWriter
from medclass.losses import MaskedBCEWithLogitsLoss


class Tiny(torch.nn.Module):
    def __init__(self, c=2):
        super().__init__()
        self.fc = torch.nn.Linear(4, c)
        self.register_buffer("thresholds", torch.full((c,), 0.5))
        self.label_names = ["a", "b"][:c]

    def forward(self, x):
        return self.fc(x.flatten(1))


def items(n=24, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = rng.integers(0, 2, 2).astype(np.float32)
        x = (rng.normal(size=(1, 4)) + y.repeat(2)[None]).astype(np.float32)
        out.append({"image": torch.as_tensor(x), "label": torch.as_tensor(y), "id": f"img{i:03d}"})
    return out


def make(tmp_path, max_epochs=2, resume=True, fingerprint=None, loss=None, patience=0, seed=0):
    torch.manual_seed(seed)
    net = Tiny()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    post = Activationsd(keys="pred", sigmoid=True)
    evaluator = Evaluator(
        device="cpu", val_data_loader=DataLoader(items(12, 1), batch_size=4), network=net,
        postprocessing=post, key_val_metric={"val_mean_auc": MeanAUC()}, precision="fp32",
    )
    manager = CheckpointManager(tmp_path / "models", net, opt, evaluator=evaluator, resume=resume,
                                fingerprint=fingerprint or {"arch": "tiny"})
    handlers = [ValidationHandler(1, evaluator), manager, EarlyStopping(evaluator, patience=patience)]
    trainer = Trainer(
        device="cpu", max_epochs=max_epochs, train_data_loader=DataLoader(items(), batch_size=4, shuffle=False),
        network=net, optimizer=opt, loss_function=loss or MaskedBCEWithLogitsLoss(), train_handlers=handlers,
        precision="fp32", decollate=False,
    )
    return net, trainer, evaluator, manager


def test_precision_resolution():
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("half", "cpu")


def test_bf16_trainer_learns_and_evaluator_returns_fp32(tmp_path):
    net, trainer, evaluator, _ = make(tmp_path, max_epochs=6)
    trainer.precision = evaluator.precision = "bf16"
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    trainer.run()
    assert np.mean(losses[-6:]) < np.mean(losses[:6])
    assert evaluator.state.output[0]["pred"].dtype == torch.float32
    assert evaluator.state.metrics["val_mean_auc"] > 0.7


def test_nonfinite_steps_are_skipped_then_raise(tmp_path):
    calls = {"n": 0}
    base = MaskedBCEWithLogitsLoss()

    def loss(pred, y):
        calls["n"] += 1
        return base(pred, y) * (float("nan") if calls["n"] in (2, 3) else 1.0)

    net, trainer, _, _ = make(tmp_path, max_epochs=1, loss=loss)
    snapshots = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: snapshots.append(net.fc.weight.detach().clone()))
    trainer.run()
    assert trainer.nonfinite_steps == 2
    assert torch.equal(snapshots[0], snapshots[1]) and torch.equal(snapshots[1], snapshots[2])  # steps 2, 3 skipped
    assert not torch.equal(snapshots[2], snapshots[3])
    assert torch.isfinite(net.fc.weight).all()

    net, trainer, _, _ = make(tmp_path / "b", max_epochs=1, loss=lambda p, y: base(p, y) * float("nan"))
    trainer.max_nonfinite_steps = 3
    with pytest.raises(FloatingPointError, match="3 consecutive"):
        trainer.run()


def test_lr_schedule_counts_weight_updates_only(tmp_path):
    import warnings

    from monai.optimizers import WarmupCosineSchedule

    calls = {"n": 0}
    base = MaskedBCEWithLogitsLoss()

    def loss(pred, y):  # the first step (and the fourth) goes non-finite
        calls["n"] += 1
        return base(pred, y) * (float("nan") if calls["n"] in (1, 4) else 1.0)

    net, trainer, _, _ = make(tmp_path, max_epochs=1, loss=loss)
    sched = WarmupCosineSchedule(trainer.optimizer, warmup_steps=2, t_total=6)
    LrSchedule(sched).attach(trainer)
    stepped = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stepped.append(e.optimizer_stepped))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.run()
    assert stepped == [False, True, True, False, True, True]
    assert sched.last_epoch == 4  # one schedule step per weight update
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    with pytest.raises(TypeError, match="step"):
        LrSchedule(object())


def _interrupt_after(trainer, epoch):
    """Ctrl-C right after ``epoch`` was saved (the handler runs after the checkpoint manager's)."""
    def stop(engine):
        if engine.state.epoch == epoch:
            raise KeyboardInterrupt
    trainer.add_event_handler(Events.EPOCH_COMPLETED, stop)


def test_checkpoints_and_resume(tmp_path):
    net, trainer, evaluator, _ = make(tmp_path, max_epochs=4)
    _interrupt_after(trainer, 2)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    last = torch.load(tmp_path / "models" / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert last["trainer"]["epoch"] == 2 and last["finished"] is False and "fc.weight" in best and "thresholds" in best
    assert last["best_metric_epoch"] == evaluator.state.best_metric_epoch
    weights_after_2 = net.fc.weight.detach().clone()

    # the same run, unfinished: continues from epoch 2 instead of starting over
    net2, trainer2, evaluator2, manager2 = make(tmp_path, max_epochs=4, seed=123)
    epochs_run = []
    trainer2.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    loaded = []
    trainer2.add_event_handler(Events.ITERATION_STARTED, lambda e: loaded.append(net2.fc.weight.detach().clone()))
    trainer2.run()
    assert manager2.resumed_from_epoch == 2
    assert epochs_run == [3, 4]
    assert torch.equal(loaded[0], weights_after_2)
    assert evaluator2.state.best_metric >= last["best_metric"]
    assert torch.load(tmp_path / "models" / "last.pt", weights_only=True)["finished"] is True

    # a finished run is not "resumed" into doing nothing, another run's last.pt is not continued
    with pytest.raises(RunMismatchError, match="already finished after 4 epoch"):
        make(tmp_path, max_epochs=4)[1].run()
    with pytest.raises(RunMismatchError, match="another training run .*arch: \"tiny\" in the saved run, \"other\" now"):
        make(tmp_path, max_epochs=5, fingerprint={"arch": "other"})[1].run()
    # resume: false starts over and keeps the old best model
    old_best = (tmp_path / "models" / "model.pt").read_bytes()
    _, trainer3, _, _ = make(tmp_path, max_epochs=1, resume=False, fingerprint={"arch": "other"})
    trainer3.run()
    assert trainer3.state.epoch == 1
    assert (tmp_path / "models" / "model.previous.pt").read_bytes() == old_best


def test_damaged_last_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunMismatchError, match="last.pt: cannot load"):
        make(tmp_path)[1].run()


def test_early_stopping_uses_best_metric_epoch(tmp_path):
    net, trainer, evaluator, _ = make(tmp_path, max_epochs=30, patience=2)
    net.fc.weight.data.zero_()
    trainer.optimizer.param_groups[0]["lr"] = 0.0  # nothing improves after epoch 1
    trainer.run()
    assert evaluator.state.best_metric_epoch == 1
    assert trainer.state.epoch == 3


def _evaluate(tmp_path, data, net, **kw):
    writer = PredictionWriter(tmp_path / "eval", ["a", "b"], network=net, metrics_filename="metrics.json", **kw)
    ev = Evaluator(device="cpu", val_data_loader=DataLoader(data, batch_size=5), network=net,
                   postprocessing=Activationsd(keys="pred", sigmoid=True), val_handlers=[writer], precision="fp32")
    ev.run()
    return writer


def test_prediction_writer_csv_thresholds_and_metrics(tmp_path):
    torch.manual_seed(0)
    net = Tiny()
    net.thresholds.copy_(torch.tensor([0.3, 0.9]))
    data = items(13)
    data[0]["label"] = torch.tensor([float("nan"), 1.0])
    _evaluate(tmp_path, data, net)
    rows = list(csv.DictReader(open(tmp_path / "eval" / "predictions.csv")))
    assert list(rows[0]) == ["id", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "prob_a", "prob_b", "threshold_a", "threshold_b", "pred_a",
                             "pred_b", "label_a", "label_b"]
    for r in rows:  # per label: probability, threshold, decision, and the decision is probability >= threshold
        assert [float(r["threshold_a"]), float(r["threshold_b"])] == pytest.approx([0.3, 0.9])
        for n in ("a", "b"):
            assert int(r[f"pred_{n}"]) == int(float(r[f"prob_{n}"]) >= float(r[f"threshold_{n}"]))
        assert r["StudyInstanceUID"] == r["SeriesInstanceUID"] == r["SOPInstanceUID"] == ""  # tensors: no DICOM
    assert [r["id"] for r in rows] == [f"img{i:03d}" for i in range(13)]
    with torch.no_grad():
        probs = torch.sigmoid(net(torch.stack([d["image"] for d in data]))).numpy()
    got = np.array([[float(r["prob_a"]), float(r["prob_b"])] for r in rows])
    np.testing.assert_allclose(got, probs, atol=1e-5)
    dec = np.array([[int(r["pred_a"]), int(r["pred_b"])] for r in rows])
    np.testing.assert_array_equal(dec, (probs >= [0.3, 0.9]).astype(int))
    assert rows[0]["label_a"] == ""
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 13 and metrics["thresholds"] == {"a": pytest.approx(0.3), "b": pytest.approx(0.9)}
    assert metrics["per_label"]["a"]["unknown"] == 1


def test_prediction_writer_without_labels_and_label_mismatch(tmp_path):
    net = Tiny()
    data = [{"image": d["image"], "id": d["id"]} for d in items(7)]
    _evaluate(tmp_path, data, net)
    header = next(csv.reader(open(tmp_path / "eval" / "predictions.csv")))
    assert header == ["id", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "prob_a", "prob_b", "threshold_a", "threshold_b", "pred_a", "pred_b"]
    assert not (tmp_path / "eval" / "metrics.json").exists()
    net.label_names = ["x", "y"]
    with pytest.raises(ValueError, match=r"trained for labels \['x', 'y'\]"):
        _evaluate(tmp_path, data, net)


def test_a_failed_run_leaves_the_previous_predictions_intact(tmp_path):
    net = Tiny()
    data = items(15)
    data[12]["image"] = torch.zeros(1, 5)  # wrong shape: the third batch fails
    with pytest.raises(RuntimeError):  # no earlier file: none is left (not an empty or partial one)
        _evaluate(tmp_path, data, net)
    assert not (tmp_path / "eval" / "predictions.csv").exists()
    _evaluate(tmp_path, items(15), net)
    before = (tmp_path / "eval" / "predictions.csv").read_bytes()
    assert len(before.splitlines()) == 16
    with pytest.raises(RuntimeError):
        _evaluate(tmp_path, data, net)
    assert (tmp_path / "eval" / "predictions.csv").read_bytes() == before


def test_resume_false_as_a_command_line_string_starts_over(tmp_path):
    make(tmp_path, max_epochs=1)[1].run()
    _, trainer, _, manager = make(tmp_path, max_epochs=1, resume="false")
    trainer.run()
    assert manager.resumed_from_epoch is None and trainer.state.epoch == 1


class _InfGradInBF16(torch.autograd.Function):
    """Identity whose backward is infinite when the forward ran in bf16 (as bf16 + channels_last_3d did here)."""

    @staticmethod
    def forward(ctx, x):
        ctx.bf16 = x.dtype == torch.bfloat16
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf") if ctx.bf16 else g


class TinyBF16Trap(Tiny):
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(_InfGradInBF16.apply(self.fc(x.flatten(1))))


def test_bf16_instability_falls_back_to_fp32_and_keeps_buffers_clean(tmp_path):
    net, trainer, _, _ = make(tmp_path, max_epochs=2)
    trap = TinyBF16Trap()
    trainer.network = trap
    trainer.optimizer = torch.optim.SGD(trap.parameters(), lr=0.1)
    trainer.precision = "bf16"
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: seen.append((e.state.iteration, trap.bn.running_mean.clone())))
    before = trap.fc.weight.detach().clone()
    trainer.run()
    assert trainer.precision == "fp32" and trainer.precision_fallbacks == 1
    assert trainer.nonfinite_steps == 3  # skipped, then fp32 for the rest
    assert all(torch.equal(m, torch.zeros(2)) for i, m in seen[:3])  # skipped steps left the buffers as they were
    assert not torch.equal(seen[3][1], torch.zeros(2))  # the first fp32 step updates them
    assert torch.isfinite(trap.fc.weight).all() and not torch.equal(trap.fc.weight, before)


def test_batch_transform_runs_on_training_inputs_only(tmp_path):
    """Trainer(batch_transform=...): every training batch goes through it (no gradients, labels untouched) before
    the network; the validation run by the ValidationHandler never does."""
    net, trainer, evaluator, _ = make(tmp_path, max_epochs=1)
    calls, seen, targets = [], [], []

    def shift(x):
        calls.append((x.clone(), torch.is_grad_enabled()))
        return x + 100.0

    def record_forward(module, args):
        seen.append((module.training, args[0].detach().clone()))

    trainer.batch_transform = shift
    net.register_forward_pre_hook(record_forward)
    loss_fn = trainer.loss_function
    trainer.loss_function = lambda pred, y: (targets.append(y.clone()), loss_fn(pred, y))[1]
    trainer.run()
    train_inputs = [x for training, x in seen if training]
    val_inputs = [x for training, x in seen if not training]
    data = items()
    assert len(calls) == len(train_inputs) == 6 and val_inputs
    for k, ((x, grad), net_in) in enumerate(zip(calls, train_inputs)):
        batch = torch.stack([it["image"] for it in data[4 * k:4 * k + 4]])
        assert not grad and torch.equal(x, batch) and torch.equal(net_in, batch + 100.0)
        assert torch.equal(targets[k], torch.stack([it["label"] for it in data[4 * k:4 * k + 4]]))
    assert all(x.abs().max() < 50 for x in val_inputs)  # the evaluator saw the plain images
    assert not hasattr(evaluator, "batch_transform")
    with pytest.raises(TypeError, match="batch_transform must be callable"):
        Trainer(device="cpu", max_epochs=1, train_data_loader=DataLoader(items(), batch_size=4), network=net,
                optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=MaskedBCEWithLogitsLoss(),
                batch_transform="flip")


@pytest.mark.parametrize("load_s,step_s,bound", [(0.02, 0.0, "data loading"), (0.0, 0.02, "compute")])
def test_data_wait_timer_tells_loading_from_compute(load_s, step_s, bound, caplog):
    """DataWaitTimer: the share of the epoch spent waiting for batches, and the images per second."""
    import logging
    import time

    from ignite.engine import Engine

    from medclass.handlers import DataWaitTimer

    def batches():
        for _ in range(5):
            time.sleep(load_s)
            yield {"image": torch.zeros(4, 1, 2, 2)}

    engine = Engine(lambda e, b: time.sleep(step_s))
    DataWaitTimer().attach(engine)
    caplog.set_level(logging.INFO, logger="medclass.handlers.timing")
    engine.run(batches(), max_epochs=1, epoch_length=5)
    share = engine.state.metrics["data_wait_share"]
    assert (share > 0.8) if bound == "data loading" else (share < 0.2)
    assert 20 / 0.2 * 0.5 < engine.state.metrics["images_per_second"] < 20 / 0.1 * 1.5
    assert f"bound by {bound}" in caplog.text
