"""qcli: a VRAM planner and model loader for quantized LLMs."""

__version__ = "0.1.0"
