"""ipywidgets views: the per-cell lifecycle widget and the pool dashboard (not built yet).

Widgets see pools only through their lifecycle events and :meth:`Pool.status` snapshots.
"""
