"""``python -m jupyter_flame.runner``: the runner process's entry point."""

from jupyter_flame.runner.main import main

main()
