"""Diffusion prediction types (diffusers names) and their conversions. Kept apart from teacher.py, which imports
diffusers (~3.5 s): the losses need the conversions without paying for it.

x_t = sqrt(a) x0 + sqrt(1 - a) eps, a = alpha_bar(t);  v = sqrt(a) eps - sqrt(1 - a) x0.
"""
from __future__ import annotations

from torch import Tensor


def prediction_to_epsilon(pred: Tensor, x_t: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """A denoiser's prediction -> the noise estimate. alpha_bar broadcasts against x_t ([B, 1, ...] or scalar).
    x_t = sqrt(a) x0 + sqrt(1 - a) eps;  v = sqrt(a) eps - sqrt(1 - a) x0."""
    a = alpha_bar
    if prediction_type == "epsilon":
        return pred
    if prediction_type == "v_prediction":
        return a.sqrt() * pred + (1 - a).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - a.sqrt() * pred) / (1 - a).clamp_min(1e-12).sqrt()
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def prediction_to_x0(pred: Tensor, x_t: Tensor, alpha_bar: Tensor, prediction_type: str) -> Tensor:
    """A denoiser's prediction -> the (unclipped) clean-sample estimate x0 (see `prediction_to_epsilon`)."""
    a = alpha_bar
    if prediction_type == "epsilon":
        return (x_t - (1 - a).sqrt() * pred) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * pred
    if prediction_type == "sample":
        return pred
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


__all__ = ["prediction_to_epsilon", "prediction_to_x0"]
