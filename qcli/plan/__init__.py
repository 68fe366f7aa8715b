"""The arithmetic: formats, presets, GPU catalog, planner, training, recommendation, estimate. No torch at module
level."""
