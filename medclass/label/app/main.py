"""MONAI Label app folder of medclass: ``monailabel start_server --app <this folder> ...`` finds the app class here.

The app itself lives in :mod:`medclass.label.application`; this file only names it (MONAI Label looks for a
direct subclass of ``MONAILabelApp`` in ``main.py``).
"""

from medclass.label.application import MedclassApp  # noqa: F401
