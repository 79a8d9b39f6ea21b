"""The jupyter-server extension (not built yet).

The server never shares Python objects with kernels: it sees runners through Kubernetes labels
and the runner records local pools write to Jupyter's runtime directory.
"""
