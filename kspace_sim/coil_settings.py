"""A build's multi-coil acquisition: its settings, and one subject's compact coil content.

The settings (:class:`CoilSettings`) are the build options ``--coils``, ``--snr``,
``--coil-model``, ``--noise-correlation`` (and its kind). :func:`subject_coils` turns one simulated
subject into what a store with coils holds for it (docs/store-format.md, "Coils"): per view the
coil geometry, its random-field seed, the maps and the noise sigma at the requested SNR in that
view's heart region, plus the subject's noise seed. Pure numpy; no I/O, no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kspace_sim.coils import (
    COIL_MODELS,
    COILS_VERSION,
    CoilGeometryRanges,
    subject_coil_geometries,
    subject_coil_maps,
    validate_n_coils,
)
from kspace_sim.fft import FFT_CONVENTION
from kspace_sim.noise import (
    FOREGROUND_FRACTION,
    NOISE_RULE_VERSION,
    correlation_matrix,
    noise_seed,
    noise_sigma,
    validate_snr_db,
)

__all__ = ["CORRELATION_KINDS", "SNR_DEFINITION", "CoilSettings", "SubjectCoils", "subject_coils", "view_snr_regions"]

CORRELATION_KINDS = ("exponential", "constant")

SNR_DEFINITION = (
    "SNR_dB = 20 log10(mean_{p in region_s} |x_s(p)| / sigma_s) per view s: x_s the view's noise-free "
    "coil-combined image over its T frames (= ifft2c(kspace[i, s])), sigma_s the standard deviation of the "
    "complex noise of one coil's image (E|e|^2 = sigma^2, real and imaginary parts sigma^2/2 each)"
)
SNR_REGION = f"heart: seg[i, s] > 0 over all frames where the view has labels, else |x_s| >= {FOREGROUND_FRACTION} max |x_s|"
NOISE_RULE = (
    "one independent sub-stream per view s and frame t: n[:, s, t] = numpy "
    "Generator(PCG64(SeedSequence(coils/noise_seed[i], spawn_key=(s, t)))).standard_normal((K, H, W, 2), float32) * "
    "float32(1/sqrt(2)) viewed as complex64 (K, H, W); noise[:, s, t] = sigma_s * (L n[:, s, t]) with "
    "L = cholesky(noise_cov) (L n = n for the identity)"
)
SYNTHESIS = (
    "k_k = fft2c(coils/maps[i, k, s] * ifft2c(kspace[i, s])) + noise[k, s]: "
    "kspace_sim.acquisition.coil_kspace(kspace[i], maps[i][:, :, None], sigma=noise_sigma[i][:, None, None, None], "
    "noise_cov=noise_cov, seed=noise_seed[i])"
)


@dataclass(frozen=True)
class CoilSettings:
    """The multi-coil options of a build.

    Attributes:
        n_coils: K >= 1 receive coils; 1 without ``snr_db`` is today's single-coil store.
        snr_db: requested SNR in dB (docs/store-format.md); None = noise-free.
        model: ``"birdcage"`` or ``"random_field"`` (:mod:`kspace_sim.coils`).
        noise_correlation: coil noise correlation rho (0 = independent coils).
        correlation_kind: ``"exponential"`` (``rho^|i-j|``) or ``"constant"`` (``rho`` off the diagonal).
        ranges: the uniform ranges each view's geometry is drawn from.
    """

    n_coils: int = 1
    snr_db: float | None = None
    model: str = "birdcage"
    noise_correlation: float = 0.0
    correlation_kind: str = "exponential"
    ranges: CoilGeometryRanges = field(default_factory=CoilGeometryRanges)

    @property
    def enabled(self) -> bool:
        """The store gets coils (format version 2): more than one coil, or noise."""
        return self.n_coils > 1 or self.snr_db is not None

    def validate(self) -> None:
        """One-line ``ValueError`` for a coil count < 1, a non-finite SNR, an unknown model or kind,
        or a correlation whose matrix is not positive definite."""
        validate_n_coils(self.n_coils)
        if self.snr_db is not None:
            validate_snr_db(self.snr_db)
        if self.model not in COIL_MODELS:
            raise ValueError(f"unknown coil model {self.model!r}; choose one of {', '.join(COIL_MODELS)}")
        if self.correlation_kind not in CORRELATION_KINDS:
            raise ValueError(f"unknown noise correlation kind {self.correlation_kind!r}; choose one of {', '.join(CORRELATION_KINDS)}")
        if self.noise_correlation != 0.0:
            if self.snr_db is None:
                raise ValueError("a noise correlation needs noise: give --snr")
            correlation_matrix(self.n_coils, self.noise_correlation, self.correlation_kind)  # raises if not PD

    def noise_cov(self) -> np.ndarray:
        """``(K, K)`` float64 unit-diagonal noise correlation (the identity for rho = 0)."""
        if self.noise_correlation == 0.0:
            return np.eye(self.n_coils)
        return correlation_matrix(self.n_coils, self.noise_correlation, self.correlation_kind)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The build parameters (``parameters.coils``, compared on resume: a store begun under another
        noise rule version is not resumed)."""
        return {
            "n_coils": int(self.n_coils),
            "snr_db": None if self.snr_db is None else float(self.snr_db),
            "model": self.model,
            "noise_correlation": {"kind": self.correlation_kind, "rho": float(self.noise_correlation)},
            "noise_rule_version": NOISE_RULE_VERSION,
            "ranges": asdict(self.ranges),
        }

    def store_attrs(self) -> dict[str, Any]:
        """The store's ``coils`` group attribute."""
        cov = self.noise_cov()
        return {
            "n_coils": int(self.n_coils),
            "model": self.model,
            "coils_version": COILS_VERSION,
            "ranges": asdict(self.ranges),
            "snr_db": None if self.snr_db is None else float(self.snr_db),
            "snr_definition": SNR_DEFINITION,
            "snr_region": SNR_REGION,
            "noise_correlation": {"kind": self.correlation_kind, "rho": float(self.noise_correlation)},
            "noise_cov": {"real": np.real(cov).tolist(), "imag": np.imag(cov).tolist()},
            "noise_rule": NOISE_RULE,
            "noise_rule_version": NOISE_RULE_VERSION,
            "noise_numpy_version": np.__version__,
            "fft_convention": FFT_CONVENTION,
            "synthesis": SYNTHESIS,
        }

    def summary(self) -> str:
        """One line for the build summary, e.g. ``8 birdcage coils, SNR 20 dB``."""
        snr = "noise-free" if self.snr_db is None else f"SNR {self.snr_db:g} dB"
        corr = f", noise correlation {self.correlation_kind} rho {self.noise_correlation:g}" if self.noise_correlation else ""
        return f"{self.n_coils} {self.model} coil{'s' if self.n_coils > 1 else ''}, {snr}{corr}"


@dataclass
class SubjectCoils:
    """What a store with coils holds for one subject.

    Attributes:
        geometry: ``(S, 7)`` float64, :meth:`CoilGeometry.to_array` per view.
        field_seed: ``(S,)`` uint64 random-field seeds.
        noise_seed: the seed of the stored noise draw.
        noise_sigma: ``(S,)`` float32 per-view sigma (image = k-space units; 0 when noise-free).
        maps: ``(K, S, H, W)`` complex64.
    """

    geometry: np.ndarray
    field_seed: np.ndarray
    noise_seed: int
    noise_sigma: np.ndarray
    maps: np.ndarray


def view_snr_regions(seg: np.ndarray | None, seg_present: np.ndarray | None, n_views: int) -> list[np.ndarray | None]:
    """Per view, the SNR region: ``seg[s] > 0`` ``(T, H, W)`` where the view has non-empty labels,
    else None (the foreground of the image)."""
    out: list[np.ndarray | None] = []
    for s in range(n_views):
        region = None
        if seg is not None and (seg_present is None or bool(seg_present[s])):
            heart = np.asarray(seg[s]) > 0
            region = heart if heart.any() else None
        out.append(region)
    return out


def subject_coils(
    subject_id: str,
    global_seed: int,
    images: np.ndarray,
    settings: CoilSettings,
    seg: np.ndarray | None = None,
    seg_present: np.ndarray | None = None,
) -> SubjectCoils:
    """One subject's coil content, deterministic for (global seed, subject id, settings).

    Args:
        subject_id: the stored id (the pseudonym in a pseudonymised store).
        global_seed: the build's global seed.
        images: ``(S, T, H, W)`` noise-free single-coil image magnitudes (the views; the B0 phase
            has unit modulus, so these are ``|ifft2c(kspace)|``).
        settings: the build's coil settings.
        seg: ``(S, T, H, W)`` labels, or None.
        seg_present: ``(S,)`` bool, the view has ground-truth labels.
    """
    s, _, h, w = images.shape
    geoms = subject_coil_geometries(global_seed, subject_id, s, settings.n_coils, settings.model, settings.ranges)
    sigma = np.zeros(s, dtype=np.float32)
    if settings.snr_db is not None:
        for i, region in enumerate(view_snr_regions(seg, seg_present, s)):
            sigma[i] = noise_sigma(images[i], settings.snr_db, region)
    return SubjectCoils(
        geometry=np.stack([g.to_array() for g in geoms]),
        field_seed=np.array([g.seed for g in geoms], dtype=np.uint64),
        noise_seed=noise_seed(global_seed, subject_id),
        noise_sigma=sigma,
        maps=subject_coil_maps(geoms, (h, w)),
    )
