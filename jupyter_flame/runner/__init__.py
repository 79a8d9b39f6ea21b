"""The runner process, ``python -m jupyter_flame.runner`` (see :mod:`jupyter_flame.runner.main`).

It imports only :mod:`jupyter_flame.channel`, :mod:`jupyter_flame.values` and the errors: never
the notebook side, pools, backends, widgets or the server.
"""
