"""The runner process, ``python -m jupyter_flame.runner`` (see :mod:`jupyter_flame.runner.main`).

It imports only :mod:`jupyter_flame.channel`, :mod:`jupyter_flame.values` and the errors: never
the notebook side, pools, backends, widgets or the server. ``main`` (entry point, the
connect-serve loop), ``env`` (the environment a backend hands it), ``_lifecycle`` (heartbeats,
parent watch, shutdown), ``tasks`` (scheduling jobs on its loop), ``jobs`` (one job's state),
``_execution`` (running a cell in an IPython shell), ``_outputs`` (streams and displays),
``outbox`` (sending results in order), ``value_cache`` (digests of values already held),
``process_group`` (a job's child processes, via psutil).
"""
