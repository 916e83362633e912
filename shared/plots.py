"""Figures for searches and genotypes (PNG files, headless).

* ``plot_genotype``: the normal and the reduction cell as DAGs, like DARTS' ``visualize.py``
  (graphviz when the ``graphviz`` package and the ``dot`` executable exist, matplotlib otherwise);
  the DARTS recurrent cell (``RNNGenotype``) likewise, x_t and h_{t-1} into s0, one activation
  edge per node, the ``concat`` nodes into h_t; a NAS-Bench-201 cell (``NB201Arch``) as its
  4-node DAG, a NAS-Bench-1Shot1 cell (``NB1Shot1Arch``) as its DAG of choice blocks, loose ends
  dashed (both matplotlib),
* ``plot_alpha_trajectories``: softmax(alpha) of every op on every edge versus epoch (DARTS
  spaces: normal and reduce rows of 14 edges; NB201 spaces: one row of 6 edges; NB-1Shot1
  spaces: a row of choice blocks' ops, a row of output and input-choice weights per source;
  the DARTS RNN space: a lower-triangular grid, one row per node, one column per predecessor),
* ``plot_curves``: accuracy (or any other logged number) versus epoch, with the best so far.

Every function creates the parent directory, closes its figure and returns the path(s) written.
"""
from __future__ import annotations

import math
import os
import shutil
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, whatever MPLBACKEND says

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from shared.genotypes import Genotype  # noqa: E402
from shared.nb1shot1_arch import NB1Shot1Arch  # noqa: E402
from shared.nb201_arch import NB201Arch  # noqa: E402
from shared.rnn_genotype import RNNGenotype  # noqa: E402
from shared.spaces import (DARTS_PRIMITIVES, NB201_EDGES, NB201_SPACES,  # noqa: E402
                           CellSpace, NB1Shot1Space, NB201Space, RNNSpace, edge_inputs,
                           get_nb1shot1_space, get_space)

Point = tuple[float, float]

# Fixed colour per known op name, so every figure agrees; other names get the next free colours.
_KNOWN_OPS = DARTS_PRIMITIVES + ("noise", "sep_conv_7x7", "conv_7x1_1x7", "conv_1x1",
                                 "conv_3x3", "avg_pool_5x5", "max_pool_5x5")
# NB201's and NB-101's ops borrow the strong colours of DARTS ops they never share a figure with.
_BORROWED = {"nor_conv_3x3": "sep_conv_3x3", "nor_conv_1x1": "max_pool_3x3",
             "conv3x3-bn-relu": "sep_conv_3x3", "conv1x1-bn-relu": "max_pool_3x3",
             "maxpool3x3": "avg_pool_3x3",
             # the RNN activations: identity plays skip_connect's part, the rest strong colours
             "tanh": "max_pool_3x3", "relu": "avg_pool_3x3", "sigmoid": "sep_conv_3x3",
             "identity": "skip_connect"}
_NODE_COLORS = {"input": "#b4dcb4", "inner": "#add8e6", "output": "#eee8aa"}
_NODE_RADIUS = 0.5
_SMALL_AXES = {"xtick.labelsize": 7, "ytick.labelsize": 7, "axes.titlesize": 8,
               "axes.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3}
_LABEL_TS = (0.5, 0.38, 0.62, 0.28, 0.72, 0.44, 0.56, 0.33, 0.67, 0.22, 0.78)


# -- shared helpers ------------------------------------------------------------------------------
def _prepare(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    return path


def _save(fig: Figure, path: str, tight: bool = True) -> str:
    """Write ``fig`` as PNG to ``path`` and close it, even if saving fails."""
    try:
        fig.savefig(_prepare(path), format="png", dpi=120 if tight else 100,
                    bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return path


def _op_colors(names: Iterable[str]) -> dict[str, Any]:
    """A colour per op name, known names first in DARTS order: fixed colours for the known
    names (so every figure agrees), the next unused palette colours for the others."""
    palette = list(plt.get_cmap("tab20").colors)
    fixed = [palette[2 * i % 20 + 2 * i // 20] for i in range(len(_KNOWN_OPS))]
    spare = [c for c in palette if c not in fixed]
    unique = list(dict.fromkeys(names))
    index = {n: _KNOWN_OPS.index(_BORROWED.get(n, n)) for n in unique
             if _BORROWED.get(n, n) in _KNOWN_OPS}
    known = sorted(index, key=index.__getitem__)
    other = [n for n in unique if n not in index]
    colors = {n: fixed[index[n]] for n in known}
    colors.update({n: spare[i % len(spare)] for i, n in enumerate(other)})
    return colors


def _input_name(j: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}"}.get(j, str(j - 2))


# -- genotype: graphviz --------------------------------------------------------------------------
def _graphviz_available() -> bool:
    """True when the ``graphviz`` package imports and ``dot`` is on PATH."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def _cell_edges(pairs: Sequence[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """(op, input, node) of every edge; node i uses pairs 2i and 2i+1."""
    if len(pairs) % 2:
        raise ValueError(f"a cell needs two (op, input) pairs per node, got {len(pairs)} pairs")
    edges = [(op, int(j), k // 2) for k, (op, j) in enumerate(pairs)]
    for op, j, node in edges:
        if not 0 <= j < 2 + node:
            raise ValueError(f"node {node} cannot take input {j} ({op}): inputs are 0, 1 and "
                             f"the earlier nodes 2..{1 + node}")
    return edges


def _digraph():
    """A left-to-right graphviz graph in the style of DARTS' visualize.py."""
    import graphviz

    g = graphviz.Digraph(
        format="png", engine="dot",
        edge_attr=dict(fontsize="20", fontname="times"),
        node_attr=dict(style="filled", shape="rect", align="center", fontsize="20",
                       height="0.5", width="0.5", penwidth="2", fontname="times"))
    g.body.extend(["rankdir=LR"])
    return g


def _render_graphviz(pairs: Sequence[tuple[str, int]], concat: Sequence[int], path: str) -> str:
    """DARTS' visualize.plot, but the output node takes only the ``concat`` nodes."""
    g = _digraph()
    g.node("c_{k-2}", fillcolor="darkseagreen2")
    g.node("c_{k-1}", fillcolor="darkseagreen2")
    steps = len(pairs) // 2
    for i in range(steps):
        g.node(str(i), fillcolor="lightblue")
    for op, j, node in _cell_edges(pairs):
        g.edge(_input_name(j), str(node), label=op, fillcolor="gray")
    g.node("c_{k}", fillcolor="palegoldenrod")
    for i in concat:
        g.edge(_input_name(i), "c_{k}", fillcolor="gray")
    stem = path[:-4] if path.endswith(".png") else path
    g.render(filename=stem, cleanup=True)
    return path


# -- genotype: matplotlib ------------------------------------------------------------------------
def _layout(steps: int, spread: float = 1.5, height: float = 3.2) -> dict[str, Point]:
    """Node centres on an ellipse: inputs left, intermediate nodes in order, alternately above
    and below the axis, output right. Points in convex position, so no straight edge runs
    through a third node. Semi-axes ``spread * (steps + 2)`` and ``height``."""
    a, b = spread * (steps + 2), height
    phi = math.radians(35)
    x_in, x_out = -a * math.cos(phi), a
    pos = {"c_{k-2}": (x_in, b * math.sin(phi)), "c_{k-1}": (x_in, -b * math.sin(phi)),
           "c_{k}": (x_out, 0.0)}
    for m in range(steps):
        x = x_in + (m + 1) * (x_out - x_in) / (steps + 1)
        y = b * math.sqrt(max(0.0, 1 - (x / a) ** 2))
        pos[str(m)] = (x, y if m % 2 == 0 else -y)
    return pos


def _bezier(p0: Point, c: Point, p2: Point, t: float) -> Point:
    u = 1 - t
    return (u * u * p0[0] + 2 * u * t * c[0] + t * t * p2[0],
            u * u * p0[1] + 2 * u * t * c[1] + t * t * p2[1])


def _control(p0: Point, p2: Point, rad: float) -> Point:
    """matplotlib's arc3 control point (valid in data units because the aspect is equal)."""
    dx, dy = p2[0] - p0[0], p2[1] - p0[1]
    return ((p0[0] + p2[0]) / 2 + rad * dy, (p0[1] + p2[1]) / 2 - rad * dx)


def _rad_for_bulge(p0: Point, p2: Point, bulge: float) -> float:
    """The arc3 rad whose curve passes ``bulge`` data units beside the chord's midpoint."""
    length = math.hypot(p2[0] - p0[0], p2[1] - p0[1]) or 1.0
    return 2 * bulge / length


def _clearance(curve: tuple[Point, Point, Point], others: Sequence[Point]) -> float:
    """Smallest distance between the curve's inner part and a node centre not on it."""
    pts = [_bezier(*curve, t / 20) for t in range(2, 19)]
    return min((math.hypot(x - ox, y - oy) for x, y in pts for ox, oy in others),
               default=math.inf)


def _draw_nodes(ax: Axes, pos: dict[str, Point],
                kinds: dict[str, str] | None = None) -> dict[str, Circle]:
    """A circle per node; ``kinds`` maps names to 'input' / 'output' (others: 'inner'), by
    default the CNN cell's c_{k-2}, c_{k-1} (inputs) and c_{k} (output). Input and output names
    are typeset as math."""
    circles = {}
    for name, (x, y) in pos.items():
        if kinds is not None:
            kind = kinds.get(name, "inner")
        else:
            kind = ("input" if name.startswith("c_{k-") else "output" if name == "c_{k}"
                    else "inner")
        circle = Circle((x, y), _NODE_RADIUS, facecolor=_NODE_COLORS[kind], edgecolor="black",
                        linewidth=1.5, zorder=3)
        ax.add_patch(circle)
        ax.text(x, y, f"${name}$" if kind != "inner" else name, ha="center", va="center",
                fontsize=11, zorder=4)
        circles[name] = circle
    return circles


def _edge_list(pairs: Sequence[tuple[str, int]], concat: Sequence[int]
               ) -> list[tuple[str, str, str | None]]:
    """(source, target, op or None for the concat edges)."""
    edges: list[tuple[str, str, str | None]] = [
        (_input_name(j), str(node), op) for op, j, node in _cell_edges(pairs)]
    bad = [i for i in concat if not 0 <= i < 2 + len(pairs) // 2]
    if bad:
        raise ValueError(f"concat {list(concat)} names nodes {bad} the cell does not have")
    return edges + [(_input_name(i), "c_{k}", None) for i in concat]


def _edge_rads(edges: Sequence[tuple[str, str, str | None]], pos: dict[str, Point]) -> list[float]:
    """A curvature per edge: the gentlest bend (alternating sides, for variety) that keeps the
    curve clear of other nodes and differs from earlier edges between the same two nodes."""
    used: dict[tuple[str, str], list[float]] = {}
    rads = []
    for k, (u, v, _) in enumerate(edges):
        others = [p for name, p in pos.items() if name not in (u, v)]
        side = 1 if k % 2 == 0 else -1
        options = [side * s * b for b in (0.3, 0.65, 1.0, 1.4) for s in (1, -1)]
        taken = used.setdefault((u, v), [])
        options = [b for b in options if all(abs(b - t) > 0.3 for t in taken)]

        def clearance(bulge: float) -> float:
            rad = _rad_for_bulge(pos[u], pos[v], bulge)
            return _clearance((pos[u], _control(pos[u], pos[v], rad), pos[v]), others)

        ok = [b for b in options if clearance(b) >= 1.8 * _NODE_RADIUS]
        bulge = ok[0] if ok else max(options, key=clearance)
        taken.append(bulge)
        rads.append(_rad_for_bulge(pos[u], pos[v], bulge))
    return rads


def _overlap(box: Bbox, others: Sequence[Bbox]) -> float:
    total = 0.0
    for o in others:
        w = min(box.x1, o.x1) - max(box.x0, o.x0)
        h = min(box.y1, o.y1) - max(box.y0, o.y0)
        if w > 0 and h > 0:
            total += w * h
    return total


def _place_label(ax: Axes, text: str, color: Any, curve: tuple[Point, Point, Point],
                 taken: list[Bbox]) -> None:
    """Put ``text`` on the curve where it overlaps the labels and nodes placed so far least."""
    renderer = ax.figure.canvas.get_renderer()
    label = ax.text(0, 0, text, ha="center", va="center", fontsize=8.5, color=color, zorder=5,
                    bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor=color,
                              linewidth=0.6, alpha=0.9))
    best: tuple[float, Point, Bbox] | None = None
    for t in _LABEL_TS:
        xy = _bezier(*curve, t)
        label.set_position(xy)
        box = label.get_window_extent(renderer).expanded(1.08, 1.2)
        score = _overlap(box, taken)
        if best is None or score < best[0]:
            best = (score, xy, box)
        if score == 0:
            break
    assert best is not None
    label.set_position(best[1])
    taken.append(best[2])


def _draw_cell(ax: Axes, pairs: Sequence[tuple[str, int]], concat: Sequence[int]) -> None:
    _draw_graph(ax, _layout(len(pairs) // 2), _edge_list(pairs, concat))


def _draw_graph(ax: Axes, pos: dict[str, Point],
                edges: Sequence[tuple[str, str, str | None]],
                kinds: dict[str, str] | None = None) -> None:
    """Nodes at ``pos`` (``kinds`` as in ``_draw_nodes``); edges (source, target, op), op None
    drawn dashed and unlabelled."""
    circles = _draw_nodes(ax, pos, kinds)
    colors = _op_colors(op for _, _, op in edges if op is not None)
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
    pad = 1.5 * _NODE_RADIUS
    ax.set_xlim(min(xs) - pad, max(xs) + pad)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.apply_aspect()  # fixes the data -> pixel transform, so label extents can be measured
    taken = [c.get_window_extent() for c in circles.values()]
    for (u, v, op), rad in zip(edges, _edge_rads(edges, pos)):
        color = colors[op] if op is not None else "gray"
        ax.add_patch(FancyArrowPatch(
            pos[u], pos[v], patchA=circles[u], patchB=circles[v], zorder=2, clip_on=False,
            connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=14,
            linewidth=1.6 if op is not None else 1.0, color=color,
            linestyle="-" if op is not None else "--"))
        if op is not None:
            _place_label(ax, op, color, (pos[u], _control(pos[u], pos[v], rad), pos[v]), taken)


def _render_matplotlib(pairs: Sequence[tuple[str, int]], concat: Sequence[int], path: str,
                       title: str) -> str:
    pos = _layout(len(pairs) // 2)
    width = max(p[0] for p in pos.values()) - min(p[0] for p in pos.values())
    height = max(p[1] for p in pos.values()) - min(p[1] for p in pos.values())
    fig, ax = plt.subplots(figsize=(0.62 * width + 1.5, 0.62 * height + 1.8))
    try:
        _draw_cell(ax, pairs, concat)
        ax.set_title(title, fontsize=12)
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)


def _nb201_layout() -> dict[str, Point]:
    """NB201's 4 nodes as a diamond (convex, so no straight edge crosses a node): input left,
    nodes 1 above and 2 below, output (node 3) right."""
    return {"c_{k-1}": (-3.0, 0.0), "1": (0.0, 2.2), "2": (0.0, -2.2), "c_{k}": (3.0, 0.0)}


def _nb201_node(i: int) -> str:
    return {0: "c_{k-1}", 3: "c_{k}"}.get(i, str(i))


def plot_nb201_cell(arch: NB201Arch, path: str) -> str:
    """An NB201 cell: node 0 (the cell input) to node 3 (its output), one edge per op;
    ``none`` edges (removed) are drawn dashed grey. Returns ``path``."""
    pos = _nb201_layout()
    edges = [(_nb201_node(frm), _nb201_node(to), None if op == "none" else op)
             for (to, frm), op in zip(NB201_EDGES, arch.ops)]
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    try:
        _draw_graph(ax, pos, edges)
        ax.set_title(f"NAS-Bench-201 cell\n{arch.tostr()}", fontsize=8)
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)


# -- NAS-Bench-1Shot1 cell ------------------------------------------------------------------------
# NB-101 names are long; the figure shows the short form (the legend-free cell plot has room for
# one short word under each node).
_NB101_SHORT = {"conv3x3-bn-relu": "conv 3x3", "conv1x1-bn-relu": "conv 1x1",
                "maxpool3x3": "max-pool 3x3"}
_LOOSE_COLOR = "#9a9a9a"


def _nb1shot1_node(node: int, output: int) -> str:
    return "in" if node == 0 else "out" if node == output else str(node)


def _nb1shot1_layout(num_nodes: int) -> dict[str, Point]:
    """Input left, output right, the choice blocks in order between them, alternately above and
    below the axis on an ellipse: convex position, so no straight edge runs through a node,
    and every block has free space outside the ellipse for its op label."""
    steps = num_nodes - 2
    a, b = 1.45 * (steps + 1), 2.6
    pos = {"in": (-a, 0.0), "out": (a, 0.0)}
    for m in range(steps):
        x = -a + (m + 1) * 2 * a / (steps + 1)
        y = b * math.sqrt(max(0.0, 1 - (x / a) ** 2))
        pos[str(m + 1)] = (x, y if m % 2 == 0 else -y)
    return pos


def _lighten(color: Any, amount: float = 0.55) -> tuple[float, float, float]:
    r, g, b = matplotlib.colors.to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def plot_nb1shot1_cell(arch: NB1Shot1Arch, path: str) -> str:
    """An NB-1Shot1 cell: input, one node per choice block (filled with its op's colour, the op
    written outside the ellipse), output. Blocks not on a path to the output (loose ends, which
    the NB-101 cell drops) and all their edges are grey and dashed. Returns ``path``."""
    space = arch.search_space
    output = space.output_node
    used = set(arch.used_blocks())
    pos = _nb1shot1_layout(space.num_nodes)
    edges: list[tuple[str, str, str | None]] = []
    loose_edge: list[bool] = []
    for node, parents in enumerate(arch.parents, start=1):
        for p in parents:
            edges.append((_nb1shot1_node(p, output), _nb1shot1_node(node, output), None))
            # an edge into or out of a loose end is not part of the built cell
            loose_edge.append(not ({p, node} - {0, output}) <= used)
    colors = _op_colors(space.ops)
    width = max(x for x, _ in pos.values()) - min(x for x, _ in pos.values())
    height = max(y for _, y in pos.values()) - min(y for _, y in pos.values())
    fig, ax = plt.subplots(figsize=(0.62 * width + 1.6, 0.62 * height + 2.4))
    circles: dict[str, Circle] = {}
    try:
        for name, (x, y) in pos.items():
            block = name not in ("in", "out")
            loose = block and int(name) not in used
            if not block:
                face = _NODE_COLORS["input" if name == "in" else "output"]
            else:
                face = "#eeeeee" if loose else _lighten(colors[arch.ops[int(name) - 1]])
            circle = Circle((x, y), _NODE_RADIUS, facecolor=face, zorder=3,
                            edgecolor=_LOOSE_COLOR if loose else "black",
                            linewidth=1.5, linestyle="--" if loose else "-")
            circles[name] = ax.add_patch(circle)
            ax.text(x, y, name, ha="center", va="center", fontsize=11, zorder=4,
                    color=_LOOSE_COLOR if loose else "black")
            if block:  # op label outside the ellipse, where no edge runs
                op = arch.ops[int(name) - 1]
                up = y >= 0
                text = _NB101_SHORT.get(op, op) + ("\n(loose end)" if loose else "")
                ax.text(x, y + (1 if up else -1) * (_NODE_RADIUS + 0.15), text,
                        ha="center", va="bottom" if up else "top", fontsize=9, zorder=5,
                        color=_LOOSE_COLOR if loose else "black",
                        bbox=dict(boxstyle="round,pad=0.2", linewidth=0.8,
                                  facecolor="white" if loose else _lighten(colors[op], 0.75),
                                  edgecolor=_LOOSE_COLOR if loose else colors[op]))
        for (u, v, _), rad, loose in zip(edges, _edge_rads(edges, pos), loose_edge):
            ax.add_patch(FancyArrowPatch(
                pos[u], pos[v], patchA=circles[u], patchB=circles[v], zorder=2, clip_on=False,
                connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=14,
                linewidth=1.0 if loose else 1.6, color=_LOOSE_COLOR if loose else "#333333",
                linestyle="--" if loose else "-"))
        xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
        ax.set_xlim(min(xs) - 1.5 * _NODE_RADIUS, max(xs) + 1.5 * _NODE_RADIUS)
        ax.set_ylim(min(ys) - 4 * _NODE_RADIUS, max(ys) + 4 * _NODE_RADIUS)  # room for labels
        ax.set_aspect("equal")
        ax.axis("off")
        title = f"NAS-Bench-1Shot1 cell, search space {space.name}"
        if len(used) < space.steps:
            title += "\ndashed grey: loose ends, dropped from the NB-101 cell"
        ax.set_title(title, fontsize=10)
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)


# -- DARTS recurrent cell ------------------------------------------------------------------------
# Node names as DARTS' rnn visualize.py has them: inputs x_{t}, h_{t-1}, the initial state "0"
# (s0), the nodes "1".."N", the output h_{t}.
_RNN_KINDS = {"x_{t}": "input", "h_{t-1}": "input", "h_{t}": "output"}
_RNN_RENAME = {"c_{k-2}": "x_{t}", "c_{k-1}": "h_{t-1}", "c_{k}": "h_{t}"}


def _rnn_layout(steps: int) -> dict[str, Point]:
    """The CNN cell's ellipse with s0 as its first inner node: x_{t} and h_{t-1} left, s0 and
    nodes 1..steps alternately above and below the axis, h_{t} right (convex position, so no
    straight edge runs through a third node, and the curve/label machinery applies as is).
    Taller and a little narrower than the CNN cell's: with 9 to 12 inner nodes the CNN
    proportions give a flat band where the long edges to h_{t} run into the labels."""
    spread = 1.3
    height = max(3.2, 0.3 * spread * (steps + 3))
    return {_RNN_RENAME.get(name, name): p
            for name, p in _layout(steps + 1, spread, height).items()}


def _rnn_edges(genotype: RNNGenotype) -> list[tuple[str, str, str | None]]:
    """(source, target, activation or None): x_{t}, h_{t-1} -> s0 and the ``concat`` nodes ->
    h_{t} unlabelled, one labelled edge per node from its predecessor."""
    edges: list[tuple[str, str, str | None]] = [("x_{t}", "0", None), ("h_{t-1}", "0", None)]
    edges += [(str(j), str(i), op) for i, (op, j) in enumerate(genotype.recurrent, start=1)]
    return edges + [(str(i), "h_{t}", None) for i in genotype.concat]


def _rnn_title(genotype: RNNGenotype) -> str:
    title = "recurrent cell"
    if list(genotype.concat) != list(range(1, genotype.steps + 1)):
        title += f"\n$h_{{t}}$ = mean of nodes {', '.join(map(str, genotype.concat))}"
    return title


def plot_rnn_cell(genotype: RNNGenotype, path: str) -> str:
    """The DARTS recurrent cell as a DAG, as DARTS' ``rnn/visualize.py`` draws it but with
    matplotlib (no graphviz needed): x_{t} and h_{t-1} into node 0 (s0), an edge labelled with
    its activation from each node's predecessor, the ``concat`` nodes (dashed) into h_{t}, whose
    value is their mean. Returns ``path``."""
    pos = _rnn_layout(genotype.steps)
    width = max(p[0] for p in pos.values()) - min(p[0] for p in pos.values())
    height = max(p[1] for p in pos.values()) - min(p[1] for p in pos.values())
    fig, ax = plt.subplots(figsize=(0.62 * width + 1.5, 0.62 * height + 1.8))
    try:
        _draw_graph(ax, pos, _rnn_edges(genotype), kinds=_RNN_KINDS)
        ax.set_title(_rnn_title(genotype), fontsize=12)
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)


def _render_rnn_graphviz(genotype: RNNGenotype, path: str) -> str:
    """DARTS' rnn/visualize.plot, but h_{t} takes only the ``concat`` nodes."""
    g = _digraph()
    g.node("x_{t}", fillcolor="darkseagreen2")
    g.node("h_{t-1}", fillcolor="darkseagreen2")
    for i in range(genotype.steps + 1):
        g.node(str(i), fillcolor="lightblue")
    g.node("h_{t}", fillcolor="palegoldenrod")
    for u, v, op in _rnn_edges(genotype):
        g.edge(u, v, label=op, fillcolor="gray")
    stem = path[:-4] if path.endswith(".png") else path
    g.render(filename=stem, cleanup=True)
    return path


def plot_genotype(genotype: Genotype | NB201Arch | NB1Shot1Arch | RNNGenotype,
                  prefix: str) -> list[str]:
    """Draw both cells to ``{prefix}_normal.png`` and ``{prefix}_reduce.png`` (an NB201 or an
    NB-1Shot1 cell: ``{prefix}_cell.png``; a DARTS recurrent cell: ``{prefix}_recurrent.png``,
    graphviz when available like the CNN cells, else ``plot_rnn_cell``); return the paths."""
    if isinstance(genotype, NB201Arch):
        return [plot_nb201_cell(genotype, f"{prefix}_cell.png")]
    if isinstance(genotype, NB1Shot1Arch):
        return [plot_nb1shot1_cell(genotype, f"{prefix}_cell.png")]
    if isinstance(genotype, RNNGenotype):
        path = _prepare(f"{prefix}_recurrent.png")
        if _graphviz_available():
            return [_render_rnn_graphviz(genotype, path)]
        return [plot_rnn_cell(genotype, path)]
    use_graphviz = _graphviz_available()
    paths = []
    for cell in ("normal", "reduce"):
        pairs, concat = getattr(genotype, cell), getattr(genotype, f"{cell}_concat")
        _edge_list(pairs, concat)  # a malformed cell fails here, before any file is written
        path = _prepare(f"{prefix}_{cell}.png")
        if use_graphviz:
            paths.append(_render_graphviz(pairs, concat, path))
        else:
            paths.append(_render_matplotlib(pairs, concat, path, f"{cell} cell"))
    return paths


# -- alpha trajectories --------------------------------------------------------------------------
def _edge_title(node: int, j: int) -> str:
    source = {0: "$c_{k-2}$", 1: "$c_{k-1}$"}.get(j, f"node {j - 2}")
    return f"node {node} ← {source}"


Space = CellSpace | NB201Space
# (cell type, candidate ops per edge, subplot title per edge), one per alpha table
AlphaTable = tuple[str, Sequence[Sequence[str]], list[str]]


def _alpha_tables(space: Space) -> list[AlphaTable]:
    if isinstance(space, NB201Space):
        titles = [f"node {to} ← {'input' if frm == 0 else f'node {frm}'}"
                  for to, frm in space.edges]
        return [("cell", [space.ops] * space.num_edges, titles)]
    return [(cell, rows, [_edge_title(n, j) for n, j in edge_inputs()[:len(rows)]])
            for cell, rows in (("normal", space.normal), ("reduce", space.reduce))]


def _check_alphas(history: Sequence[dict[str, Any]], space: Space) -> None:
    if not history:
        raise ValueError("plot_alpha_trajectories: the history is empty")
    tables = _alpha_tables(space)
    for h in history:
        alphas = h["alphas"]
        if len(alphas) != len(tables):
            names = ", ".join(cell for cell, _, _ in tables)
            raise ValueError(f"epoch {h.get('epoch')}: need {len(tables)} alpha table(s) "
                             f"({names}), got {len(alphas)}")
        for table, (_, ops, _) in zip(alphas, tables):
            if len(table) != len(ops) or any(len(r) != len(o) for r, o in zip(table, ops)):
                raise ValueError(f"epoch {h.get('epoch')}: alpha table does not match space "
                                 f"{space.name} ({len(ops)} edges x {len(ops[0])} ops)")


def _plot_edge(ax: Axes, epochs: list[int], probs: list[list[float]], ops: Sequence[str],
               colors: dict[str, Any]) -> None:
    marker = "o" if len(epochs) <= 30 else None
    for k, op in enumerate(ops):
        ax.plot(epochs, [p[k] for p in probs], color=colors[op], marker=marker, markersize=3,
                linewidth=1.3, label=op)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.set_xticks([epochs[0]])


def _draw_trajectories(fig: Figure, axes: Any, history: Sequence[dict[str, Any]],
                       space: Space) -> None:
    epochs = [int(h["epoch"]) for h in history]
    tables = _alpha_tables(space)
    colors = _op_colors(op for _, rows, _ in tables for row in rows for op in row)
    axes[0][0].set_ylim(-0.02, 1.02)  # shared by all axes
    axes[0][0].set_yticks([0, 0.25, 0.5, 0.75, 1])
    for r, (cell, rows, titles) in enumerate(tables):
        for e, title in enumerate(titles):
            ax = axes[r][e]
            _plot_edge(ax, epochs, [h["alphas"][r][e] for h in history], rows[e], colors)
            ax.set_title(title)
            if r == len(tables) - 1:
                ax.set_xlabel("epoch")
        axes[r][0].set_ylabel(f"{cell}\nsoftmax(α)", fontsize=9)
    handles = [Line2D([], [], color=c, marker="o", markersize=4, label=op)
               for op, c in colors.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), fontsize=10,
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"architecture weights per edge (space {space.name})", fontsize=11)
    # fixed margins in inches: tight_layout costs seconds on 28 axes
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, top=1 - 0.6 / height,
                        bottom=1.05 / height, wspace=0.12, hspace=0.4)


# -- alpha trajectories: NAS-Bench-1Shot1 --------------------------------------------------------
NB1SHOT1_PREFIX = "nb1shot1-"  # 'nb1shot1-1': the bare '1'..'3' would read as a DARTS space name


def _source_name(node: int) -> str:
    return "input" if node == 0 else f"node {node}"


# (tensor index in the mixing-weights tuple, row, subplot title, curve labels), per subplot
Panel = tuple[int, int, str, list[str]]


def _nb1shot1_panels(space: NB1Shot1Space) -> list[list[Panel]]:
    """Row 0: each choice block's ops (``alphas_mixed_op`` rows). Row 1: the output's weights,
    then each input-choice node's, one curve per candidate source node."""
    ops_row: list[Panel] = [(0, b, f"node {b + 1}: op", list(space.ops))
                            for b in range(space.steps)]
    sources_row: list[Panel] = [(1, 0, "output ← sources",
                                 [_source_name(n) for n in range(space.steps + 1)])]
    sources_row += [(2 + i, 0, f"node {node} ← sources", [_source_name(n) for n in range(node)])
                    for i, node in enumerate(space.input_choice_nodes)]
    return [ops_row, sources_row]


def _check_nb1shot1_alphas(history: Sequence[dict[str, Any]], space: NB1Shot1Space) -> None:
    if not history:
        raise ValueError("plot_alpha_trajectories: the history is empty")
    shapes = [(space.steps, len(space.ops)), (1, space.steps + 1),
              *((1, node) for node in space.input_choice_nodes)]
    for h in history:
        alphas = h.get("alphas")
        if not isinstance(alphas, (list, tuple)) or len(alphas) != len(shapes):
            got = len(alphas) if isinstance(alphas, (list, tuple)) else type(alphas).__name__
            raise ValueError(f"epoch {h.get('epoch')}: NB-1Shot1 space {space.name} needs "
                             f"{len(shapes)} alpha tensors (mixed_op, output, one per input-"
                             f"choice node {list(space.input_choice_nodes)}), got {got}")
        for k, (table, (rows, cols)) in enumerate(zip(alphas, shapes)):
            ok = (isinstance(table, (list, tuple)) and len(table) == rows
                  and all(isinstance(r, (list, tuple)) and len(r) == cols for r in table))
            if not ok:
                raise ValueError(f"epoch {h.get('epoch')}: alpha tensor {k} does not match "
                                 f"NB-1Shot1 space {space.name}: expected {rows} x {cols}")


def _source_colors(n: int) -> dict[str, Any]:
    """A colour per source node (input, node 1, ...): tab10 colours that the NB-101 ops (orange,
    green, purple) do not use, so the two legends never suggest a link."""
    palette = plt.get_cmap("tab10").colors
    picks = [palette[i] for i in (0, 3, 5, 6, 8, 9, 7)]
    return {_source_name(k): picks[k % len(picks)] for k in range(n)}


def _draw_nb1shot1_trajectories(fig: Figure, axes: Any, history: Sequence[dict[str, Any]],
                                space: NB1Shot1Space) -> None:
    epochs = [int(h.get("epoch", i)) for i, h in enumerate(history)]
    rows = _nb1shot1_panels(space)
    op_colors = _op_colors(space.ops)
    legends = [{op: op_colors[op] for op in space.ops}, _source_colors(space.steps + 1)]
    axes[0][0].set_ylim(-0.02, 1.02)  # shared by all axes
    axes[0][0].set_yticks([0, 0.25, 0.5, 0.75, 1])
    for r, (panels, colors) in enumerate(zip(rows, legends)):
        for c, (tensor, row, title, labels) in enumerate(panels):
            ax = axes[r][c]
            _plot_edge(ax, epochs, [h["alphas"][tensor][row] for h in history], labels, colors)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.tick_params(labelleft=True)  # rows differ in length: every row keeps its ticks
        for ax in axes[r][len(panels):]:
            ax.set_visible(False)
        axes[r][0].set_ylabel(f"{'choice blocks' if r == 0 else 'inputs'}\nsoftmax(α)",
                              fontsize=9)
        handles = [Line2D([], [], color=col, marker="o", markersize=4,
                          label=_NB101_SHORT.get(name, name)) for name, col in colors.items()]
        # each row its own legend, right of the row's last used subplot
        axes[r][len(panels) - 1].legend(handles=handles, loc="upper left", fontsize=8,
                                        bbox_to_anchor=(1.04, 1.0), frameon=False,
                                        title="op" if r == 0 else "source", title_fontsize=8)
    fig.suptitle(f"architecture weights, NAS-Bench-1Shot1 search space {space.name}",
                 fontsize=11)
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.75 / width, right=1 - 1.35 / width, top=1 - 0.6 / height,
                        bottom=0.5 / height, wspace=0.25, hspace=0.55)


def _plot_nb1shot1_trajectories(history: list[dict], space: NB1Shot1Space, path: str) -> str:
    _check_nb1shot1_alphas(history, space)
    rows = _nb1shot1_panels(space)
    cols = max(len(r) for r in rows)
    with plt.rc_context(_SMALL_AXES):
        fig, axes = plt.subplots(2, cols, figsize=(2.0 * cols + 2.1, 5.6), sharey=True,
                                 squeeze=False)
        try:
            _draw_nb1shot1_trajectories(fig, axes, history, space)
        except BaseException:
            plt.close(fig)
            raise
        return _save(fig, path, tight=False)


# -- alpha trajectories: DARTS recurrent cell ----------------------------------------------------
def _rnn_state(j: int) -> str:
    return f"s{j}"


def _check_rnn_alphas(history: Sequence[dict[str, Any]], space: RNNSpace) -> list[np.ndarray]:
    """The one (edges x ops) table of every epoch as an array; a ValueError that names the
    expected shape otherwise (lists, arrays and CPU tensors all pass)."""
    if not history:
        raise ValueError("plot_alpha_trajectories: the history is empty")
    shape = (space.num_edges, len(space.ops))
    expected = (f"RNN space {space.name} needs alphas = [one {shape[0]} x {shape[1]} table] "
                f"(rows: node 1..{space.steps} x predecessor, ops {list(space.ops)})")
    tables = []
    for i, h in enumerate(history):
        alphas = h.get("alphas")
        if not isinstance(alphas, (list, tuple)) or len(alphas) != 1:
            got = (f"{len(alphas)} tables" if isinstance(alphas, (list, tuple))
                   else type(alphas).__name__)
            raise ValueError(f"epoch {h.get('epoch', i)}: {expected}, got {got}")
        try:
            table = np.asarray(alphas[0], dtype=float)
        except (TypeError, ValueError):  # ragged rows, non-numbers
            table = None
        if table is None or table.shape != shape:
            got = "a ragged table" if table is None else " x ".join(map(str, table.shape))
            raise ValueError(f"epoch {h.get('epoch', i)}: {expected}, got {got}")
        tables.append(table)
    return tables


def _plot_rnn_trajectories(history: Sequence[dict[str, Any]], space: RNNSpace,
                           path: str) -> str:
    """The lower-triangular grid: row i = node i, column j = predecessor s_j, one curve per op.
    Only the 36 used axes are created (the upper triangle stays empty, which is also where the
    legend goes); fixed margins instead of tight_layout, which costs seconds on 36 axes."""
    tables = _check_rnn_alphas(history, space)
    epochs = [int(h.get("epoch", i)) for i, h in enumerate(history)]
    probs = np.stack(tables)  # epochs x edges x ops
    colors = _op_colors(space.ops)
    n = space.steps
    left, right, top, bottom = 0.75, 0.15, 0.75, 0.55  # inches
    width, height = left + right + 1.55 * n, top + bottom + 1.25 * n
    with plt.rc_context(_SMALL_AXES):
        fig = plt.figure(figsize=(width, height))
        try:
            grid = fig.add_gridspec(n, n, left=left / width, right=1 - right / width,
                                    top=1 - top / height, bottom=bottom / height,
                                    wspace=0.12, hspace=0.45)
            first: Axes | None = None
            for e, (node, j) in enumerate(space.edges()):
                ax = fig.add_subplot(grid[node - 1, j], sharex=first, sharey=first)
                if first is None:
                    first = ax
                    ax.set_ylim(-0.02, 1.02)
                    ax.set_yticks([0, 0.5, 1])
                _plot_edge(ax, epochs, probs[:, e, :].tolist(), space.ops, colors)
                ax.set_title(f"node {node} ← {_rnn_state(j)}", pad=3)
                ax.tick_params(labelleft=j == 0, labelbottom=node == n)
                if j == 0:
                    ax.set_ylabel("softmax(α)", fontsize=7, labelpad=2)
                if node == n:
                    ax.set_xlabel("epoch")
            handles = [Line2D([], [], color=colors[op], marker="o", markersize=4, label=op)
                       for op in space.ops]
            # the empty upper-right triangle holds the legend and the key to the names
            fig.legend(handles=handles, loc="upper right", fontsize=10, frameon=False,
                       title="op", title_fontsize=10, ncol=len(handles),
                       bbox_to_anchor=(1 - right / width, 1 - top / height))
            fig.text(1 - right / width, 1 - (top + 0.75) / height,
                     f"{_rnn_state(0)}: the initial state, from $x_t$ and $h_{{t-1}}$\n"
                     f"node i = $s_i$; each node keeps one predecessor after search",
                     ha="right", va="top", fontsize=9)
            fig.suptitle(f"architecture weights per edge (space {space.name}, recurrent cell)",
                         fontsize=12, y=1 - 0.2 / height, va="top")
        except BaseException:
            plt.close(fig)
            raise
        return _save(fig, path, tight=False)


def _resolve_space(space: Space | NB1Shot1Space | RNNSpace | str
                   ) -> Space | NB1Shot1Space | RNNSpace:
    """A space object from its name: NB201 names, 'nb1shot1-1'..'nb1shot1-3', 'darts-rnn',
    DARTS names."""
    if not isinstance(space, str):
        return space
    if space in NB201_SPACES:
        return NB201_SPACES[space]
    if space == RNNSpace.name:
        return RNNSpace()
    if space.startswith(NB1SHOT1_PREFIX):
        return get_nb1shot1_space(space[len(NB1SHOT1_PREFIX):])
    return get_space(space)


def plot_alpha_trajectories(history: list[dict],
                            space: Space | NB1Shot1Space | RNNSpace | str, path: str) -> str:
    """softmax(alpha) per op per edge versus epoch: a row of edges for each cell type (DARTS:
    normal and reduce, 14 edges; NB201: one row of 6), one colour per op name across all
    subplots and one legend. An NB-1Shot1 space (the object, or 'nb1shot1-1'..'nb1shot1-3'):
    a row of choice blocks (3 op curves each) and a row of the output's and each input-choice
    node's weights (one curve per source node). The DARTS RNN space (``RNNSpace`` or
    'darts-rnn'; ``alphas`` = [one 36 x 5 table, rows in ``RNNSpace.edges()`` order]): one row
    per node, one column per predecessor. Returns ``path``."""
    space = _resolve_space(space)
    if isinstance(space, NB1Shot1Space):
        return _plot_nb1shot1_trajectories(history, space, path)
    if isinstance(space, RNNSpace):
        return _plot_rnn_trajectories(history, space, path)
    _check_alphas(history, space)
    tables = _alpha_tables(space)
    n_edges = len(tables[0][1])
    width = max(1.75 * n_edges, 7.0)  # room for the legend under a short row
    with plt.rc_context(_SMALL_AXES):  # rc rather than per-axis calls: faster on 28 axes
        fig, axes = plt.subplots(len(tables), n_edges, figsize=(width, 0.4 + 2.5 * len(tables)),
                                 sharey=True, squeeze=False)
        try:
            _draw_trajectories(fig, axes, history, space)
        except BaseException:
            plt.close(fig)
            raise
        return _save(fig, path, tight=False)


# -- curves --------------------------------------------------------------------------------------
def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(int(h.get("epoch", i)), float(h[key])) for i, h in enumerate(history)
              if isinstance(h.get(key), (int, float)) and not isinstance(h.get(key), bool)]
    return [p[0] for p in points], [p[1] for p in points]


def _best_so_far(values: list[float], key: str) -> list[float]:
    better = min if any(k in key for k in ("loss", "obj", "err", "ppl")) else max
    out: list[float] = []
    for v in values:
        out.append(v if not out else better(out[-1], v))
    return out


def plot_curves(history: list[dict], path: str,
                keys: Sequence[str] = ("train_acc", "valid_acc"),
                marks: Sequence[tuple[float, str]] = (), log_y: bool = False) -> str:
    """``keys`` (those present) versus epoch, each with a dashed best-so-far (anytime) curve;
    ``marks``: (epoch, label) events drawn as labelled vertical lines (e.g. a switch to ASGD);
    ``log_y``: a logarithmic y axis (perplexities fall by orders of magnitude)."""
    series = {k: _series(history, k) for k in keys}
    series = {k: s for k, s in series.items() if s[0]}
    if not series:
        raise ValueError(f"plot_curves: none of {list(keys)} is in the history")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    try:
        for i, (key, (epochs, values)) in enumerate(series.items()):
            color = f"C{i}"
            ax.plot(epochs, values, color=color, marker="o" if len(epochs) <= 50 else None,
                    markersize=3.5, label=key)
            ax.plot(epochs, _best_so_far(values, key), color=color, linestyle="--",
                    linewidth=1.0, alpha=0.7, label=f"best {key} so far")
        for epoch, label in marks:
            ax.axvline(epoch, color="0.4", linestyle=":", linewidth=1.2, label=label)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(", ".join(series))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)
