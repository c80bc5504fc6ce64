"""mcjepa: pretrain and evaluate MC-JEPA (Bardes, Ponce & LeCun, arXiv 2307.12698)."""

__version__ = "0.1.0"
