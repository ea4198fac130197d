"""``medclass tune``: hyper-parameter search of a bundle's training recipe with Optuna.

:mod:`~medclass.tuning.space` (the search space in the bundle's ``configs/tune.yaml``),
:mod:`~medclass.tuning.storage` (one study shared by workers: database URL or journal file),
:mod:`~medclass.tuning.trials` (a trial: the bundle's ``train`` workflow, pruned on the validation AUC per epoch,
never reading the test split), :mod:`~medclass.tuning.writeback` (``--write-best``) and
:mod:`~medclass.tuning.cli` (the command). Needs ``optuna`` (``pip install -e ".[tune]"``); nothing is imported
here, so the modules that do not need it load without it.
"""
