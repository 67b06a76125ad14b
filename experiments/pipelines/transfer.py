"""S0: initialise a model from another model's checkpoint by layer-name matching.

El-Bana et al. start their COVID infection DeepLabv3+ from weights trained on pulmonary nodules.
`transfer_weights` copies every variable whose layer name and shape match; the head (or any layer whose
shapes differ, e.g. a different class count) keeps its fresh initialisation and is listed as reshaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import keras


class TransferError(RuntimeError):
    """No layer of the target matched the source: the checkpoint is of another architecture."""


@dataclass
class TransferReport:
    """Layer names by outcome: copied, absent from the source, or present with other shapes."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    loaded_parameters: int = 0

    def as_dict(self) -> dict:
        return {
            "loaded": self.loaded,
            "skipped": self.skipped,
            "reshaped": self.reshaped,
            "loaded_parameters": self.loaded_parameters,
        }

    def summary(self) -> str:
        return (
            f"transfer: {len(self.loaded)} layers loaded ({self.loaded_parameters:,} parameters), "
            f"{len(self.reshaped)} reshaped (kept fresh), {len(self.skipped)} not in the source"
        )


def _layers_with_weights(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Every weight-carrying leaf layer by name, looking inside nested models (e.g. a backbone)."""
    found: dict[str, keras.layers.Layer] = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(_layers_with_weights(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found


def transfer_weights(source: keras.Model | str | Path, target: keras.Model) -> TransferReport:
    """Copies weights from `source` (a model or a `.keras` file) into `target` by layer name.

    A layer is loaded when every one of its variables has the same shape in both; otherwise it is
    "reshaped" and keeps the target's initialisation. Raises `TransferError` when nothing matches.
    """
    if not isinstance(source, keras.Model):
        source = keras.saving.load_model(source, compile=False)
    source_layers = _layers_with_weights(source)
    report = TransferReport()
    for name, layer in _layers_with_weights(target).items():
        origin = source_layers.get(name)
        if origin is None:
            report.skipped.append(name)
            continue
        values = origin.get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in layer.weights]:
            report.reshaped.append(name)
            continue
        layer.set_weights(values)
        report.loaded.append(name)
        report.loaded_parameters += sum(int(v.size) for v in values)
    if not report.loaded:
        raise TransferError(
            f"no layer of {target.name!r} matches {source.name!r} by name and shape "
            f"({len(report.skipped)} absent, {len(report.reshaped)} with other shapes)"
        )
    return report
