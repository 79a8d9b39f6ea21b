# jupyter-flame defaults for every kernel of a notebook image or user pod.
#
# IPython reads this from a profile (~/.ipython/profile_default/ipython_config.py) or system-wide
# (/etc/ipython/ipython_config.py: z2jh-values.yaml mounts it there). A keyword in code wins over
# these; `%flame config` in a notebook shows every option, its value and where it came from.
# The full list: docs/configuration.md.
c = get_config()  # noqa: F821  (IPython provides get_config while it loads this file)

# Pools: a runner idle for 10 minutes goes away; at most 4 runners per pool, one cell each.
c.Pool.idle_shutdown_after = 600
c.Pool.max = 4
c.Pool.max_concurrency = 1
c.Pool.boot_timeout = 300  # pods may wait for a node to scale up and pull the image

# Cells without --backend run on Kubernetes when the kernel runs in a pod.
c.FlameMagics.default_backend = "kubernetes"

# Runner pods: the notebook's namespace unless set (POD_NAMESPACE); the notebook container is
# the one named "notebook" in Zero-to-JupyterHub user pods.
c.KubernetesBackend.app_container_name = "notebook"
