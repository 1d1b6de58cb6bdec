"""labelq: distributed, queue-based batch labelling with a teacher and a LoRA student."""

__version__ = "0.1.0"
