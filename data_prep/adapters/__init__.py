"""Dataset adapters: each reads one public dataset in its published layout (see `base.py`).

Importing this package registers every adapter, so `open_dataset(name, root)` finds them by name.
"""

from data_prep.adapters import (  # noqa: F401  (imported to register the adapters)
    covid_chestxray,
    covid_qu_ex,
    covidx,
    image_folder,
    lidc,
    medseg,
    msd,
    zenodo,
)
from data_prep.adapters.base import DatasetAdapter, dataset_names, get_adapter, open_dataset, register

__all__ = ["DatasetAdapter", "dataset_names", "get_adapter", "open_dataset", "register"]
