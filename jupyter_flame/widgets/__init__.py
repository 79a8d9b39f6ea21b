"""ipywidgets views: the per-cell lifecycle view and the pool dashboard.

``progress`` (a cell's journey as data, rendered as text and HTML: pure), ``throttle`` (at most
10 refreshes a second, on the flame loop), ``cell_view`` (the view under a ``%%flame`` cell, its
Cancel button and the kernel subshell that lets clicks through while the cell runs),
``dashboard`` (the live pool dashboard and its controls). Widgets see pools only through their
lifecycle events, ``Pool``'s public methods and :meth:`Pool.status` snapshots.
"""
