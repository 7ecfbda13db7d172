"""Hydra configs of the upstream M3LEO experiments (``python -m m3leo_hf.train experiment=...``)."""
