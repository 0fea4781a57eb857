"""Darkroom services. Each runs alone (`python -m services.<name>`) or all in `darkroom dev`."""
