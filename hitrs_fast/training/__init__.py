"""Training utilities and entry points (pre-training with DeepSpeed, downstream tasks).

Only this package imports DeepSpeed, and only inside the functions that need it.
"""
