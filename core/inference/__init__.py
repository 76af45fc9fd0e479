"""Scoring and embedding whole catalogues: the same per-batch functions run on one machine
(`engines.run_local`, the default and the reference) or on Ray Data (`ray_engine`), so
the output is the same row for row whatever the engine."""
