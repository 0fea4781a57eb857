"""Darkroom's shared library: settings, logging, events, topology, runtime, storage, store."""
