"""End-to-end tests of the Kubernetes backend, against any cluster (see conftest.py)."""
