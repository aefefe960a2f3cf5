"""Pretraining runs: their configs and presets, and the resumable training loop."""
