"""Cartesian k-t undersampling masks: a registry of patterns, each ``(T, W)`` bool per slice."""

from kspace_sim.masks import cartesian, poisson, vista  # noqa: E402,F401  importing them registers the built-in patterns
from kspace_sim.masks.registry import (
    achieved_acceleration,
    acs_lines_mask,
    available_patterns,
    get_pattern,
    make_mask,
    mask_bank,
    mask_name,
    parse_mask_name,
    register_pattern,
    validate_mask_request,
)

__all__ = [
    "achieved_acceleration",
    "acs_lines_mask",
    "available_patterns",
    "get_pattern",
    "make_mask",
    "mask_bank",
    "mask_name",
    "parse_mask_name",
    "register_pattern",
    "validate_mask_request",
]
