"""`make chaos`: the real pipeline, one process per service, under injected faults.

See docs/chaos.md. Run with `python -m chaos [--uploads N]`.
"""
