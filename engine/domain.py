"""The out-of-domain check: how far a study's images lie from the images the model was trained on.

A bundle's domain signature describes the vision graph's `image_features` of its training images, pooled
over a coarse grid of the image tokens (4 x 4 cells for the embedded model: a chest's layout is part of
what "in domain" means; averaging over the whole image hides inverted or cropped images). The features'
distribution is a probabilistic PCA: mean, the leading components with their variances, and one isotropic
variance for the rest (a low-rank-plus-identity covariance, the same shrinkage idea as Ledoit-Wolf at a
fraction of its size: 4 MB instead of a 64 MB precision matrix for 4096 features). The score is the
Mahalanobis distance under that covariance; the threshold is the 99th percentile of the scores of held-out
validation images, set per graph variant (int8 features differ from fp32 ones).
Fitting and scoring live here together so export, bench and engine share one definition of the score.

A bundle without a signature gives `in_domain: None` ("unknown"), never True.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import BundleError

SIGNATURE_FILE = "domain.npz"
METHOD = "ppca-mahalanobis"
DEFAULT_PERCENTILE = 99.0
DEFAULT_COMPONENTS = 256
MAX_GRID = 4
# pooled features at most this wide: the components matrix stays a few MB for any hidden size
MAX_POOLED_WIDTH = 4096


@dataclass(frozen=True)
class DomainState:
    """What the draft says about its study: in_domain None means the bundle has no signature."""

    in_domain: bool | None
    score: float | None
    threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"in_domain": self.in_domain, "score": self.score, "threshold": self.threshold}

    @property
    def label(self) -> str:
        return {True: "in domain", False: "out of domain", None: "unknown"}[self.in_domain]


UNKNOWN = DomainState(None, None, None)


def state_from_dict(data: Any) -> DomainState:
    """The inverse of `DomainState.to_dict`; anything else (a draft stored before this check) is UNKNOWN."""
    if not isinstance(data, dict) or data.get("in_domain") not in (True, False, None):
        return UNKNOWN
    score, threshold = data.get("score"), data.get("threshold")
    return DomainState(data["in_domain"], float(score) if isinstance(score, (int, float)) else None,
                       float(threshold) if isinstance(threshold, (int, float)) else None)


@dataclass(frozen=True)
class DomainSignature:
    grid: int  # the image tokens are averaged over grid x grid cells
    mean: np.ndarray  # [features]
    components: np.ndarray  # [k, features], orthonormal rows
    variances: np.ndarray  # [k]: the variance along each component
    residual_variance: float  # the mean variance of the directions left out
    thresholds: dict[str, float]  # graph variant -> threshold on the distance

    def distances(self, image_features: np.ndarray) -> np.ndarray:
        """The Mahalanobis distance of each image [images, tokens, hidden] from the training images."""
        centred = pool_features(image_features, self.grid) - self.mean
        projected = centred @ self.components.T
        residual = centred - projected @ self.components
        squared = (projected ** 2 / self.variances).sum(axis=1) + (residual ** 2).sum(axis=1) / self.residual_variance
        return np.sqrt(squared)

    def threshold(self, variant: str) -> float:
        return self.thresholds.get(variant, self.thresholds.get("fp32", max(self.thresholds.values())))

    def state(self, image_features: np.ndarray, variant: str) -> DomainState:
        """One study: its farthest image decides (a lateral the model never saw is out of domain too)."""
        score, threshold = float(self.distances(image_features).max()), self.threshold(variant)
        return DomainState(bool(score <= threshold), round(score, 3), round(threshold, 3))

    def with_thresholds(self, thresholds: dict[str, float]) -> DomainSignature:
        return DomainSignature(self.grid, self.mean, self.components, self.variances, self.residual_variance,
                               dict(thresholds))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        names = sorted(self.thresholds)
        np.savez(buffer, grid=np.int64(self.grid), mean=self.mean.astype(np.float32),
                 components=self.components.astype(np.float32), variances=self.variances.astype(np.float64),
                 residual_variance=np.float64(self.residual_variance), threshold_variants=np.array(names),
                 thresholds=np.array([self.thresholds[name] for name in names], dtype=np.float64))
        return buffer.getvalue()


def grid_side(tokens: int, hidden: int) -> int:
    side = math.isqrt(tokens)
    if side * side != tokens:
        return 1
    return max(1, min(MAX_GRID, side, math.isqrt(MAX_POOLED_WIDTH // max(hidden, 1))))


def pool_features(image_features: np.ndarray, grid: int) -> np.ndarray:
    """[images, tokens, hidden] -> [images, grid * grid * hidden]: the mean of each cell of the token grid
    (tokens in row order, as the vision tower's patches; grid 1 is the mean over all tokens)."""
    features = np.asarray(image_features, dtype=np.float64)
    if features.ndim != 3:
        raise BundleError(f"image features must be [images, tokens, hidden], got shape {features.shape}")
    if grid == 1:
        return features.mean(axis=1)
    images, tokens, hidden = features.shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise BundleError(f"a {grid} x {grid} domain grid needs a square number of image tokens, got {tokens}")
    square = features.reshape(images, side, side, hidden)
    cells = [block.mean(axis=(1, 2)) for rows in np.array_split(square, grid, axis=1)
             for block in np.array_split(rows, grid, axis=2)]
    return np.concatenate(cells, axis=1)


def fit_signature(train_features: np.ndarray, components: int = DEFAULT_COMPONENTS) -> DomainSignature:
    """The distribution of the training images' features [images, tokens, hidden]; thresholds come after,
    from held-out images (`set_thresholds`): the training images' own distances are biased low."""
    features = np.asarray(train_features)
    if features.ndim != 3 or features.shape[0] < 3:
        raise BundleError(f"a domain signature needs the features of 3+ training images, got {features.shape}")
    grid = grid_side(features.shape[1], features.shape[2])
    pooled = pool_features(features, grid)
    mean = pooled.mean(axis=0)
    _, singular, vt = np.linalg.svd(pooled - mean, full_matrices=False)
    variances = singular ** 2 / pooled.shape[0]
    k = max(1, min(components, pooled.shape[0] - 2, pooled.shape[1] - 1))
    floor = max(float(variances[0]) * 1e-9, 1e-12)
    rest = float(variances[k:].sum() / (pooled.shape[1] - k))
    return DomainSignature(grid, mean, vt[:k], np.maximum(variances[:k], floor), max(rest, floor), {})


def validation_threshold(signature: DomainSignature, validation_features: np.ndarray,
                         percentile: float = DEFAULT_PERCENTILE) -> float:
    if not 50.0 <= percentile <= 100.0:
        raise BundleError(f"the threshold percentile must be in [50, 100], got {percentile}")
    if len(validation_features) < 1:
        raise BundleError("a domain threshold needs the features of 1+ validation images")
    return float(np.percentile(signature.distances(validation_features), percentile))


def read_signature(bundle_dir: Path, file_name: str | None) -> DomainSignature | None:
    """The bundle's signature (None when model.json names none); `BundleError` when the file is unusable."""
    if not file_name:
        return None
    path = Path(bundle_dir) / file_name
    if Path(file_name).name != file_name or not path.is_file():
        raise BundleError(f"model bundle {bundle_dir}: the domain signature {file_name} is missing")
    try:
        with np.load(path, allow_pickle=False) as data:
            signature = DomainSignature(
                int(data["grid"]), data["mean"].astype(np.float64), data["components"].astype(np.float64),
                data["variances"].astype(np.float64), float(data["residual_variance"]),
                {str(name): float(value) for name, value in zip(data["threshold_variants"], data["thresholds"])})
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise BundleError(f"model bundle {bundle_dir}: {file_name} is not a domain signature ({error})") from None
    width = signature.mean.size
    if signature.components.shape != (signature.variances.size, width) or not signature.thresholds or \
            not all(math.isfinite(value) for value in signature.thresholds.values()):
        raise BundleError(f"model bundle {bundle_dir}: {file_name} has inconsistent shapes or no thresholds")
    return signature
