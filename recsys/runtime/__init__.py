"""Runtime helpers below the models: device selection, checkpoints, the epoch loop and its monitor.

Models import these; nothing here imports models, training or evaluation.
"""
