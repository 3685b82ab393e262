"""Decide: for every target, how many workers it should have. Pure code, no I/O."""

from .agent import Agent
from .capacity import CapacityAgent
from .decision import Decision, Recommendation
from .engine import build_agents, decide
from .memory import TargetMemory
from .view import TargetView

__all__ = ["Agent", "CapacityAgent", "Decision", "Recommendation", "TargetMemory",
           "TargetView", "build_agents", "decide"]
