"""Darkroom services: each runs on its own (`python -m services.<name>`) or together in `darkroom dev`."""
