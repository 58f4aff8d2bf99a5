"""WSGI entry point for gunicorn: ``gunicorn 'server.wsgi:make_app()'``."""

from __future__ import annotations

import logging
import os

from flask import Flask

from .app import create_app
from .config import load_config

__all__ = ["make_app"]


def make_app() -> Flask:
    """Build the app from ``$JIT_SSH_CONFIG`` and ``JIT_SSH_*`` (read when called, not at import)."""
    logging.basicConfig(level=os.environ.get("JIT_SSH_LOG_LEVEL", "INFO"), format="%(message)s")
    return create_app(load_config(), worker=True)
