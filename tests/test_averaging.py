"""Weight averaging: the average is what gets validated and saved; training goes on from the raw weights."""

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.handlers import ValidationHandler
from monai.transforms import Activationsd

from medclass.engines import Evaluator, Trainer
from medclass.handlers import CheckpointManager, MeanAUC, WeightAveraging
from medclass.losses import MaskedBCEWithLogitsLoss
from tests.test_engines_handlers import Tiny, items


def make(tmp_path, max_epochs=2, window=1.0, resume=True, seed=0):
    torch.manual_seed(seed)
    net = Tiny()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    evaluator = Evaluator(
        device="cpu", val_data_loader=DataLoader(items(12, 1), batch_size=4), network=net,
        postprocessing=Activationsd(keys="pred", sigmoid=True), key_val_metric={"val_mean_auc": MeanAUC()},
        precision="fp32",
    )
    ema = WeightAveraging(net, evaluator, window_epochs=window)
    manager = CheckpointManager(tmp_path / "models", net, opt, evaluator=evaluator, resume=resume,
                                fingerprint={"arch": "tiny"}, averaging=ema)
    trainer = Trainer(
        device="cpu", max_epochs=max_epochs, train_data_loader=DataLoader(items(), batch_size=4, shuffle=False),
        network=net, optimizer=opt, loss_function=MaskedBCEWithLogitsLoss(),
        train_handlers=[ValidationHandler(1, evaluator), manager], precision="fp32", decollate=False,
    )
    return net, trainer, evaluator, ema


def test_average_follows_the_exponential_formula():
    net = Tiny()
    ema = WeightAveraging(net, window_epochs=1.0)
    ema.decay = 0.9  # what _start sets from the epoch length: 1 - 1/(1 * 10 iterations)
    start = net.fc.weight.detach().clone()
    expected = start.clone()
    for n in range(1, 31):
        with torch.no_grad():
            net.fc.weight.add_(1.0)
        ema.update()
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * net.fc.weight.detach()
    torch.testing.assert_close(ema.shadow["fc.weight"], expected)
    # the average lags the raw weights (which moved by +30); after 30 updates the warm-up bound
    # (31/40 = 0.775 < 0.9) still sets the decay, so the lag of a unit ramp is about d / (1 - d) = 3.4
    lag = (net.fc.weight - ema.shadow["fc.weight"]).mean().item()
    assert 2.5 < lag < 4.5
    assert "thresholds" in ema.shadow and torch.equal(ema.shadow["thresholds"], net.thresholds)


def test_validation_sees_the_average_and_training_continues_from_raw_weights(tmp_path):
    net, trainer, evaluator, ema = make(tmp_path, max_epochs=3)
    seen = {}
    evaluator.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.setdefault(
        trainer.state.epoch, net.fc.weight.detach().clone()))
    raw_after_epoch = {}
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: raw_after_epoch.setdefault(
        e.state.epoch, net.fc.weight.detach().clone()))
    trainer.run()
    assert ema.num_updates == 3 * 6
    # validation ran on the average, which differs from the raw weights; after it, the raw weights are back
    for epoch in (1, 2, 3):
        assert not torch.allclose(seen[epoch], raw_after_epoch[epoch])
    torch.testing.assert_close(net.fc.weight.detach(), raw_after_epoch[3])
    best = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    if evaluator.state.best_metric_epoch == 3:
        torch.testing.assert_close(best["fc.weight"], ema.shadow["fc.weight"])
    torch.testing.assert_close(best["fc.weight"], seen[evaluator.state.best_metric_epoch])
    assert "fc.weight" in best and "thresholds" in best


def test_resume_continues_the_average(tmp_path):
    _, trainer, _, ema = make(tmp_path, max_epochs=3)

    def interrupt(engine):
        if engine.state.epoch == 2:
            raise KeyboardInterrupt
    trainer.add_event_handler(Events.EPOCH_COMPLETED, interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    shadow_after_2 = {k: v.clone() for k, v in ema.shadow.items()}
    last = torch.load(tmp_path / "models" / "last.pt", weights_only=True)
    assert last["averaging"]["num_updates"] == 12

    _, trainer2, _, ema2 = make(tmp_path, max_epochs=3, seed=7)
    started = []
    trainer2.add_event_handler(Events.ITERATION_STARTED, lambda e: started.append(
        {k: v.clone() for k, v in ema2.shadow.items()}) if not started else None)
    trainer2.run()
    torch.testing.assert_close(started[0]["fc.weight"], shadow_after_2["fc.weight"])
    assert ema2.num_updates == 18


def test_window_zero_disables_and_bad_window_is_an_error(tmp_path):
    net, trainer, evaluator, ema = make(tmp_path, max_epochs=1, window=0)
    seen = []
    evaluator.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(net.fc.weight.detach().clone()))
    trainer.run()
    assert not ema.enabled and ema.shadow == {}
    torch.testing.assert_close(seen[0], net.fc.weight.detach())  # validated the raw weights
    assert "averaging" not in torch.load(tmp_path / "models" / "last.pt", weights_only=True)
    with pytest.raises(ValueError, match="window_epochs"):
        WeightAveraging(Tiny(), window_epochs=-1)
