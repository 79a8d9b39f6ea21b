"""docs/configuration.md: every configurable option and every magic option, generated from
the code (``jupyter flame config --reference``; a test fails when the committed copy is
stale)."""

from __future__ import annotations

from traitlets.config import Configurable

from jupyter_flame.config import reference_markdown
from jupyter_flame.notebook.magic import FlameMagics
from jupyter_flame.notebook.options import cell_parser, pool_parser
from jupyter_flame.notebook.settings import backend_classes

__all__ = ["configuration_reference"]


def configuration_reference() -> str:
    from jupyter_flame.pool.pool import Pool
    from jupyter_flame.server.service import FlameServer

    classes: list[type[Configurable]] = [Pool, FlameMagics, *backend_classes()]
    parts = [reference_markdown(classes),
             "## The server extension (`jupyter_server_config.py`)", "",
             "The runners panel's server side reads its options from the Jupyter server's "
             "configuration, e.g. `c.FlameServer.reap_interval = 5` in "
             "`jupyter_server_config.py` or `--FlameServer.reap=False` on the command line.",
             "", reference_markdown([FlameServer], intro=False).replace("## `FlameServer`",
                                                                     "### `FlameServer`"),
             "## Magic options", "",
             "`%%flame?` shows the same text in a notebook.", "", "```text",
             cell_parser().format_help().rstrip(), "```", "", "```text",
             pool_parser().format_help().rstrip(), "```", ""]
    return "\n".join(parts)
