"""Helpers shared by the stages (ids, rate-limited logging, units, host facts, file primitives).

Internal: not part of the public API; any stage may import these modules.
"""
