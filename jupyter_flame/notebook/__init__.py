"""The notebook side: what runs in the kernel for a ``%%flame`` cell.

``magic`` (``%%flame`` and ``%flame``), ``options`` (pure argument parsing), ``cell`` (capture ->
pack -> run -> atomic merge, the waiting text status), ``job`` (``--bg`` cells), ``settings``
(``%flame config``), ``reference`` (docs/configuration.md, generated). It uses pools only
through :class:`jupyter_flame.pool.Pool`'s public methods and status snapshots.
"""
