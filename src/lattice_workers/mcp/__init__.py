"""``lattice-workers mcp``: a stdio Model Context Protocol server, so that an agent can
start, watch and collect the runs of others with nothing but MCP configured.

It is a client of the supervisor like the command line (started on demand, the same
errors), built on the official ``mcp`` SDK (the ``mcp`` extra). See :mod:`._server`.
"""

from lattice_workers.mcp._server import TOOL_NAMES, build_server, serve

__all__ = ["TOOL_NAMES", "build_server", "serve"]
