"""Observe: what each queue holds and which workers are alive, busy and serving it."""

from .observer import Observer, observe

__all__ = ["Observer", "observe"]
