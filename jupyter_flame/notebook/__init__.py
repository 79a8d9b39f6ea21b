"""The notebook side: what runs in the kernel for a ``%%flame`` cell.

``magic`` (``%%flame`` and ``%flame``), ``options`` (pure argument parsing), ``cell`` (capture ->
pack -> run -> atomic merge), ``job`` (``--bg`` cells), ``status`` (the text dashboard).
It uses pools only through :class:`jupyter_flame.pool.Pool`'s public methods.
"""
