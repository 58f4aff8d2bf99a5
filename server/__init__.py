"""The jit-ssh service: Flask app factory, models, migrations, services, JSON API, audit.

Import :func:`server.app.create_app` to build an app from a
:class:`server.config.ServerConfig`; nothing here reads the environment at
import time.
"""

__all__ = ["create_app", "load_config", "ServerConfig"]


def __getattr__(name: str) -> object:  # lazy, so `import server.models` stays light
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("load_config", "ServerConfig"):
        from . import config

        return getattr(config, name)
    raise AttributeError(name)
