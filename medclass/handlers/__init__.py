"""Thin ignite adapters around medclass's pure functions (metrics, predictions, checkpoints, weight averaging)."""

from medclass.handlers.averaging import WeightAveraging
from medclass.handlers.checkpoint import CheckpointManager
from medclass.handlers.early_stop import EarlyStopping
from medclass.handlers.evaluation import EvaluationWriter, OperatingPointSelector, stored_provenance
from medclass.handlers.metrics import MaskedAccuracyMetric, MaskedAUCMetric, MeanAccuracy, MeanAUC
from medclass.handlers.predictions import PredictionWriter
from medclass.handlers.progress import ProgressBar
from medclass.handlers.schedule import LrSchedule
from medclass.handlers.timing import DataWaitTimer
from medclass.handlers.saliency import SaliencyHandler
from medclass.handlers.tensorboard import TensorBoardStats

__all__ = [
    "CheckpointManager",
    "DataWaitTimer",
    "EarlyStopping",
    "EvaluationWriter",
    "LrSchedule",
    "OperatingPointSelector",
    "MaskedAUCMetric",
    "MaskedAccuracyMetric",
    "MeanAUC",
    "MeanAccuracy",
    "PredictionWriter",
    "ProgressBar",
    "SaliencyHandler",
    "TensorBoardStats",
    "WeightAveraging",
    "stored_provenance",
]
