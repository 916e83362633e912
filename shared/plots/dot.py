"""Graphviz cell diagrams in the style of DARTS' ``visualize.py`` (left to right, filled
rectangles, Times): whether graphviz can be used, the styled graph, rendering it to a PNG.

The cell modules call ``dot._graphviz_available()`` through this module, so a test can switch
graphviz off by patching it here."""
from __future__ import annotations

import shutil
from typing import Any


def _graphviz_available() -> bool:
    """True when the ``graphviz`` package imports and ``dot`` is on PATH."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def _digraph() -> Any:
    """A left-to-right graphviz graph in the style of DARTS' visualize.py."""
    import graphviz

    g = graphviz.Digraph(
        format="png", engine="dot",
        edge_attr=dict(fontsize="20", fontname="times"),
        node_attr=dict(style="filled", shape="rect", align="center", fontsize="20",
                       height="0.5", width="0.5", penwidth="2", fontname="times"))
    g.body.extend(["rankdir=LR"])
    return g


def _render(g: Any, path: str) -> str:
    """Render ``g`` to ``path`` (a .png name; graphviz adds the extension itself)."""
    stem = path[:-4] if path.endswith(".png") else path
    g.render(filename=stem, cleanup=True)
    return path
