"""Tooling that ships beside otaguard but is no part of the update path (the fault proxy).

Nothing in ``otaguard`` imports it; it imports nothing from ``otaguard``.
"""
