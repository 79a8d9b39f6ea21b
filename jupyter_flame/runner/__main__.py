"""``python -m jupyter_flame.runner``: the runner process's entry point.

A runner pod gets its channel key from a Secret as ``JUPYTER_FLAME_KEY``. Before anything
else, the runner hands it to itself through a pipe and re-executes without it (same pid), so
the key is in neither ``os.environ`` nor the process's ``/proc/<pid>/environ`` (which a removal
from ``os.environ`` leaves as it was). Local runners get a pipe from the start.
"""

import os
import sys

if "JUPYTER_FLAME_KEY" in os.environ and "JUPYTER_FLAME_KEY_FD" not in os.environ:
    from jupyter_flame.runner.env import reexec_without_key

    reexec_without_key(sys.argv[1:])

from jupyter_flame.runner.main import main  # noqa: E402

main()
