"""Backends: where runners live, behind one contract (:class:`~.base.Backend`).

``base`` (the contract, lifecycle events), ``registry`` (backends by entry-point name),
``local`` (subprocess runners) with ``local_records`` (runner records, psutil checks) and
``gpu`` (GPU discovery and leasing), ``quantity`` (Kubernetes quantities, via the client's
parser), ``kubernetes/`` (runner pods cloned from the notebook's pod). Backends never import
pools or the notebook side.
"""
