"""Cell DAGs with matplotlib (no graphviz needed): nodes as circles on an ellipse, edges as
arc3 curves bent just enough to clear the other nodes, op labels placed on their curve where
they overlap the labels and nodes placed so far least."""
from __future__ import annotations

import math
from typing import Any, Sequence

from matplotlib.axes import Axes
from matplotlib.patches import Circle, FancyArrowPatch
from matplotlib.transforms import Bbox

from shared.plots.common import _NODE_COLORS, _NODE_RADIUS, Point, _op_colors

_LABEL_TS = (0.5, 0.38, 0.62, 0.28, 0.72, 0.44, 0.56, 0.33, 0.67, 0.22, 0.78)


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


def _bulge_clearance(p0: Point, p2: Point, bulge: float, others: Sequence[Point]) -> float:
    """``_clearance`` of the curve from ``p0`` to ``p2`` that bulges ``bulge`` to the side."""
    rad = _rad_for_bulge(p0, p2, bulge)
    return _clearance((p0, _control(p0, p2, rad), p2), others)


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
        clearance = {b: _bulge_clearance(pos[u], pos[v], b, others) for b in options}
        ok = [b for b in options if clearance[b] >= 1.8 * _NODE_RADIUS]
        bulge = ok[0] if ok else max(options, key=clearance.__getitem__)
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


def _points(ax: Axes, length: float) -> float:
    """``length`` data units along x, in points (the aspect is equal, so along y alike)."""
    (x0, _), (x1, _) = ax.transData.transform([(0.0, 0.0), (length, 0.0)])
    return (x1 - x0) * 72.0 / ax.figure.dpi


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
    # Each end stops at its node's circle plus matplotlib's default 2-point gap. Clipping the
    # curve at a circle round its end point is what ``shrinkA``/``shrinkB`` do (in points), a
    # cheap test; ``patchA``/``patchB`` clip at the same circles through generic patch
    # containment, ~1 s of every cell diagram.
    shrink = _points(ax, _NODE_RADIUS) + 2.0
    for (u, v, op), rad in zip(edges, _edge_rads(edges, pos)):
        color = colors[op] if op is not None else "gray"
        ax.add_patch(FancyArrowPatch(
            pos[u], pos[v], shrinkA=shrink, shrinkB=shrink, zorder=2, clip_on=False,
            connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=14,
            linewidth=1.6 if op is not None else 1.0, color=color,
            linestyle="-" if op is not None else "--"))
        if op is not None:
            _place_label(ax, op, color, (pos[u], _control(pos[u], pos[v], rad), pos[v]), taken)


def _figsize(pos: dict[str, Point], extra_w: float, extra_h: float) -> tuple[float, float]:
    """A figure size of 0.62 inch per data unit of the layout plus the given margins."""
    width = max(p[0] for p in pos.values()) - min(p[0] for p in pos.values())
    height = max(p[1] for p in pos.values()) - min(p[1] for p in pos.values())
    return 0.62 * width + extra_w, 0.62 * height + extra_h
