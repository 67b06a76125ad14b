"""Tiny rows on synthetic phantoms for the pipeline tests: the S0 segmenter rows (test_streams,
test_nodule_transfer) and the tiny classifier settings (test_lung_then_classify, test_uncertainty).

The MedSeg phantoms hold slices of whole volumes without patient ids; their split is made here by
volume (the volume id standing in for the patient), written as a split file, so that no volume
spans two splits. Their unlabelled `val_im` slices (no masks, as in MedSeg) are removed. Everything is tiny: 32 px inputs, a plain U-Net with 4-8-16 filters, one epoch.
"""

from __future__ import annotations

from pathlib import Path

from data_prep import phantoms
from data_prep.adapters import open_dataset
from data_prep.splits import patient_split, save_split

TINY_SEGMENTER = [
    "data.image_size=32",
    "data.batch_size=4",
    "data.preprocess=window=lung",
    "model.name=unet",
    "model.encoder=plain",
    "model.options={encoder_kwargs: {filters: [4, 8, 16]}}",
    "training.epochs=1",
    "training.verbose=0",
    "training.tensorboard=false",
    "evaluation.bootstrap_resamples=20",
]

TINY_CLASSIFIER = [
    "data.image_size=32",
    "data.batch_size=8",
    "model.weights=null",
    "model.options={filters: [4, 8]}",
    "training.epochs=1",
    "training.tensorboard=false",
    "training.verbose=0",
    "evaluation.bootstrap_resamples=20",
]


def phantom_roots(folder: Path) -> dict[str, Path]:
    """Generates MedSeg and LIDC phantoms (64 px) under `folder`; returns dataset -> root."""
    phantoms.generate(folder, kinds=("medseg", "lidc"), n_cases=4, seed=0, size=64, slices=8)
    (folder / "medseg" / "val_im.nii.gz").unlink()
    return {"medseg": folder / "medseg", "lidc": folder / "lidc"}


def volume_split_file(root: Path, out: Path) -> Path:
    """A split CSV of the MedSeg phantoms grouped by volume (train / val / test)."""
    rows = [
        (record.key, record.volume_id or None, "+".join(record.labels) or "none", "inferred")
        for record in open_dataset("medseg", root).records()
    ]
    save_split(patient_split(rows, val=0.25, test=0.25, seed=0, id_kind="inferred"), out)
    return out


def medseg_overrides(roots: dict[str, Path], split_file: Path) -> list[str]:
    """Overrides reading the MedSeg phantoms with the volume split, plus the tiny model."""
    return [
        f"data.root={roots['medseg']}",
        "data.split=file",
        f"data.split_file={split_file}",
        *TINY_SEGMENTER,
    ]
