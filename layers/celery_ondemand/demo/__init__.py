"""The demo: the whole scaling loop on one machine (``make demo``, ``ondemand demo``)."""

from .runner import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
