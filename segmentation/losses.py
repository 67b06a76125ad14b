"""Segmentation losses for `model.compile`, written in `keras.ops` and saved with the model.

Conventions shared by every loss here
- `y_pred`: probabilities (B, H, W, K): sigmoid outputs (K = 1, or K independent masks) or softmax
  outputs (K classes, channel 0 = background).
- `y_true`: either the same shape as `y_pred` (binary masks / one-hot), or integer class ids of shape
  (B, H, W) or (B, H, W, 1) when K > 1; those are one-hot encoded to K classes.
- Each loss returns one value per image (B,); Keras then averages over the batch.
- `class_weights`: one weight per channel, normalised to sum to 1 (default: equal weights). A weight of
  0 for channel 0 ignores the background class of a softmax output.
- Region losses (Dice, Jaccard, Tversky) are soft (computed on probabilities) and per image and channel,
  with an additive smoothing constant `smooth` in numerator and denominator (default 1.0 pixel), so an
  empty prediction on an empty mask scores 1 (loss 0).
- Log terms clip probabilities to [EPSILON, 1 - EPSILON] with EPSILON = 1e-7.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

EPSILON = 1e-7
PACKAGE = "segmentation"


def align_targets(y_true, y_pred):
    """Returns `y_true` as float one-hot / binary masks with the shape of `y_pred` (B, H, W, K).

    Integer targets (B, H, W) or (B, H, W, 1) are one-hot encoded when K > 1.
    """
    num_classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape) - 1:
        y_true = ops.expand_dims(y_true, -1)
    if num_classes > 1 and y_true.shape[-1] == 1:
        class_ids = ops.cast(ops.squeeze(y_true, -1), "int32")
        y_true = ops.one_hot(class_ids, num_classes)
    return ops.cast(y_true, y_pred.dtype)


def _weights(class_weights: Sequence[float] | None, num_classes: int):
    """Normalised per-channel weights (K,)."""
    if class_weights is None:
        class_weights = [1.0] * num_classes
    if len(class_weights) != num_classes:
        raise ValueError(f"class_weights has {len(class_weights)} entries for {num_classes} output channels")
    total = float(sum(class_weights))
    if total <= 0:
        raise ValueError(f"class_weights must have a positive sum, got {list(class_weights)}")
    return ops.convert_to_tensor([w / total for w in class_weights], "float32")


def _weighted_channel_mean(per_channel, class_weights: Sequence[float] | None):
    """(B, K) per-channel values -> (B,) weighted mean over channels."""
    weights = ops.cast(_weights(class_weights, per_channel.shape[-1]), per_channel.dtype)
    return ops.sum(per_channel * weights, axis=-1)


def _pixel_counts(y_true, y_pred):
    """Soft true positives, false positives and false negatives per image and channel, each (B, K)."""
    y_true = align_targets(y_true, y_pred)
    axes = tuple(range(1, len(y_pred.shape) - 1))
    true_pos = ops.sum(y_true * y_pred, axis=axes)
    false_pos = ops.sum((1.0 - y_true) * y_pred, axis=axes)
    false_neg = ops.sum(y_true * (1.0 - y_pred), axis=axes)
    return true_pos, false_pos, false_neg


class _SegmentationLoss(keras.losses.Loss):
    """Base: stores `class_weights` and serialises the constructor arguments in `_options`."""

    def __init__(self, class_weights: Sequence[float] | None = None, name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def _options(self) -> dict[str, Any]:
        return {}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "class_weights": self.class_weights, **self._options()}


class _RegionLoss(_SegmentationLoss):
    """Base of the soft overlap losses: 1 - index(TP, FP, FN) per image and channel, weighted over channels."""

    def __init__(self, smooth: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.smooth = float(smooth)

    def _options(self) -> dict[str, Any]:
        return {"smooth": self.smooth}

    def _index(self, true_pos, false_pos, false_neg):
        raise NotImplementedError

    def call(self, y_true, y_pred):
        index = self._index(*_pixel_counts(y_true, y_pred))
        return _weighted_channel_mean(1.0 - index, self.class_weights)


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiceLoss(_RegionLoss):
    """1 - (2 TP + s) / (2 TP + FP + FN + s) = 1 - (2 sum(p g) + s) / (sum(p) + sum(g) + s), s = `smooth`."""

    def _index(self, true_pos, false_pos, false_neg):
        return (2.0 * true_pos + self.smooth) / (2.0 * true_pos + false_pos + false_neg + self.smooth)


@keras.saving.register_keras_serializable(package=PACKAGE)
class JaccardLoss(_RegionLoss):
    """1 - (TP + s) / (TP + FP + FN + s) = 1 - (sum(p g) + s) / (sum(p) + sum(g) - sum(p g) + s)."""

    def _index(self, true_pos, false_pos, false_neg):
        return (true_pos + self.smooth) / (true_pos + false_pos + false_neg + self.smooth)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TverskyLoss(_RegionLoss):
    """1 - (TP + s) / (TP + alpha FP + beta FN + s); alpha = beta = 1 is the Jaccard loss.

    beta > alpha penalises missed lesion pixels more than false alarms (Salehi et al. 2017).
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.beta = float(alpha), float(beta)

    def _options(self) -> dict[str, Any]:
        return {**super()._options(), "alpha": self.alpha, "beta": self.beta}

    def _index(self, true_pos, false_pos, false_neg):
        return (true_pos + self.smooth) / (
            true_pos + self.alpha * false_pos + self.beta * false_neg + self.smooth
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class BCELoss(_SegmentationLoss):
    """Binary cross-entropy of sigmoid outputs, mean over pixels, weighted mean over channels."""

    def call(self, y_true, y_pred):
        y_true = align_targets(y_true, y_pred)
        prob = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        pixel_loss = -(y_true * ops.log(prob) + (1.0 - y_true) * ops.log(1.0 - prob))
        axes = tuple(range(1, len(y_pred.shape) - 1))
        return _weighted_channel_mean(ops.mean(pixel_loss, axis=axes), self.class_weights)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CategoricalCELoss(_SegmentationLoss):
    """Categorical cross-entropy of softmax outputs: -sum_k K w_k g_k log p_k, mean over pixels.

    With equal weights this is the usual categorical cross-entropy (the weights are normalised to
    sum to 1, hence the factor K).
    """

    def call(self, y_true, y_pred):
        y_true = align_targets(y_true, y_pred)
        num_classes = y_pred.shape[-1]
        weights = ops.cast(_weights(self.class_weights, num_classes), y_pred.dtype) * num_classes
        prob = ops.clip(y_pred, EPSILON, 1.0)
        pixel_loss = -ops.sum(weights * y_true * ops.log(prob), axis=-1)
        return ops.mean(pixel_loss, axis=tuple(range(1, len(y_pred.shape) - 1)))


@keras.saving.register_keras_serializable(package=PACKAGE)
class FocalLoss(_SegmentationLoss):
    """Focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log(p_t), mean over pixels.

    `multiclass=False` (sigmoid outputs): per channel, alpha_t = alpha on positives and 1 - alpha on
    negatives; weighted mean over channels. `multiclass=True` (softmax outputs): -sum_k K w_k alpha g_k
    (1 - p_k)^gamma log p_k, summed over classes (alpha is then a constant factor).
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, multiclass: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.gamma, self.multiclass = float(alpha), float(gamma), bool(multiclass)

    def _options(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "gamma": self.gamma, "multiclass": self.multiclass}

    def call(self, y_true, y_pred):
        y_true = align_targets(y_true, y_pred)
        axes = tuple(range(1, len(y_pred.shape) - 1))
        prob = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        if self.multiclass:
            num_classes = y_pred.shape[-1]
            weights = ops.cast(_weights(self.class_weights, num_classes), y_pred.dtype) * num_classes
            terms = weights * y_true * self.alpha * (1.0 - prob) ** self.gamma * ops.log(prob)
            return ops.mean(-ops.sum(terms, axis=-1), axis=axes)
        prob_true = y_true * prob + (1.0 - y_true) * (1.0 - prob)
        alpha_true = y_true * self.alpha + (1.0 - y_true) * (1.0 - self.alpha)
        pixel_loss = -alpha_true * (1.0 - prob_true) ** self.gamma * ops.log(prob_true)
        return _weighted_channel_mean(ops.mean(pixel_loss, axis=axes), self.class_weights)


@keras.saving.register_keras_serializable(package=PACKAGE)
class CombinedLoss(keras.losses.Loss):
    """Weighted sum of losses: sum_i weight_i * loss_i(y_true, y_pred), per image (B,)."""

    def __init__(self, terms: Sequence[tuple[keras.losses.Loss, float]], name: str | None = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.terms = [(loss, float(weight)) for loss, weight in terms]
        if not self.terms:
            raise ValueError("CombinedLoss needs at least one (loss, weight) term")

    def call(self, y_true, y_pred):
        return sum(weight * loss.call(y_true, y_pred) for loss, weight in self.terms)

    def get_config(self) -> dict[str, Any]:
        terms = [[keras.saving.serialize_keras_object(loss), weight] for loss, weight in self.terms]
        return {**super().get_config(), "terms": terms}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CombinedLoss:
        config = dict(config)
        config["terms"] = [
            (keras.saving.deserialize_keras_object(loss), weight) for loss, weight in config["terms"]
        ]
        return cls(**config)


LOSS_NAMES = ("bce", "cce", "dice", "jaccard", "focal", "tversky", "bce_dice", "cce_dice", "focal_dice")


def get_loss(name: str, class_weights: Sequence[float] | None = None, **options: Any) -> keras.losses.Loss:
    """A loss by name (see `LOSS_NAMES`); "bce_dice" is S3's BCE + Dice with weights 1 and 1.

    `options` go to the region or focal term (e.g. smooth, alpha, beta, gamma).
    """
    simple = {
        "bce": BCELoss,
        "cce": CategoricalCELoss,
        "dice": DiceLoss,
        "jaccard": JaccardLoss,
        "focal": FocalLoss,
        "tversky": TverskyLoss,
    }
    if name in simple:
        return simple[name](class_weights=class_weights, **options)
    pairs = {"bce_dice": BCELoss, "cce_dice": CategoricalCELoss, "focal_dice": FocalLoss}
    if name in pairs:
        first_options = options if name == "focal_dice" else {}
        dice_options = {} if name == "focal_dice" else options
        return CombinedLoss(
            [
                (pairs[name](class_weights=class_weights, **first_options), 1.0),
                (DiceLoss(class_weights=class_weights, **dice_options), 1.0),
            ],
            name=name,
        )
    raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSS_NAMES)}")
