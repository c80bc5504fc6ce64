"""Benchmark suite of mcjepa: speed and memory side by side with reference implementations.

One module per figure (``flow_inference``, ``pretrain_step``, ``cost_volume``, ``data``,
``memory``, ``video``), each with ``run(ctx) -> dict``; ``python -m benchmarks`` runs them
(see ``benchmarks.run`` and docs/benchmarks.md).
"""
