"""The ``jit-ssh`` command-line client."""
