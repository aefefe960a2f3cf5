"""Errors a run stops with; the command line turns each into one line naming the fix."""

from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the last checkpoint is kept."""


class CompileError(RuntimeError):
    """``torch.compile`` could not build the network here (no C++ compiler, no Triton, an
    unsupported platform)."""
