"""Counters and their persistence."""

from buzon.metrics.counters import PERSISTED, U32_MAX, Counters, wire_u32
from buzon.metrics.persist import load_state, save_state

__all__ = ["PERSISTED", "U32_MAX", "Counters", "load_state", "save_state", "wire_u32"]
