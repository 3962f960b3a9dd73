"""The shared engine: config, distribution, I/O, the loop, the method contract, evaluation, search, pipeline.

It names no method: methods register themselves (`ennas.core.method.register_method`).
"""
