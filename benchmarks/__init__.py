"""jit-ssh's figures, measured side by side with their references: ``python -m benchmarks``."""
