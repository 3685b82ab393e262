"""Import a user's class named in the config as ``package.module:ClassName``.

Code is imported from a config only here, only for a key that names a class explicitly
(``policy:``, ``scaler:``), and the class must subclass the extension point it replaces.
"""

from __future__ import annotations

from importlib import import_module
from typing import TypeVar

from .errors import ConfigError

T = TypeVar("T")


def load_class(path: str, base: type[T], where: str) -> type[T]:
    """The class at ``path``; a clear :class:`ConfigError` naming ``where`` otherwise."""
    module_name, _, class_name = path.partition(":")
    try:
        module = import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise ConfigError(f"{where}: {path!r} is not a subclass of {base.__name__}")
    return cls
