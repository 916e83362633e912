"""Fast evaluation of the search cell (experimental v1 — being measured)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.ops import DilConv, FactorizedReduce, Identity, NoiseOp, SepConv, Zero

CL = torch.channels_last
CFG = dict(channels_last=True, share=True, dil_s2_sub=True, dil3="poly", dil5="poly",
           pw_linear=True, addcmul=True, poly_min3=0, poly_min5=0, small3="embed", small5="embed")


# -- plan -------------------------------------------------------------------------------------
def _kind(op: nn.Module, stride: int) -> str:
    if isinstance(op, Zero):
        return "none"
    if isinstance(op, Identity):
        return "skip"
    if isinstance(op, NoiseOp):
        return "noise"
    if isinstance(op, FactorizedReduce):
        return "fr"
    if isinstance(op, SepConv):
        return "sep"
    if isinstance(op, DilConv):
        return "dil"
    if (isinstance(op, nn.Sequential) and len(op) == 2 and isinstance(op[1], nn.BatchNorm2d)
            and isinstance(op[0], (nn.MaxPool2d, nn.AvgPool2d))):
        return "pool"
    return "generic"


def cell_plan(cell) -> list[list[tuple[int, str]]]:
    plan = cell.__dict__.get("_fast_plan")
    if plan is None:
        plan = []
        e = 0
        for i in range(cell._steps):
            for j in range(2 + i):
                mixed = cell._ops[e]
                stride = 2 if cell.reduction and j < 2 else 1
                plan.append([(k, _kind(op, stride)) for k, op in enumerate(mixed._ops)])
                e += 1
        cell.__dict__["_fast_plan"] = plan
    return plan


# -- kernels ----------------------------------------------------------------------------------
def bn(y: torch.Tensor, m: nn.BatchNorm2d, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``scale * m(y)`` in one batch_norm call (scale: 0-d tensor or None)."""
    weight, bias = m.weight, m.bias
    if scale is not None:
        s = scale.expand(y.shape[1]).contiguous()
        if weight is None:
            weight = s
        else:
            weight, bias = weight * s, bias * s
    factor = 0.0
    if m.training and m.track_running_stats and m.num_batches_tracked is not None:
        m.num_batches_tracked.add_(1)
        factor = m.momentum if m.momentum is not None else 1.0 / float(m.num_batches_tracked)
    use_batch = m.training or (m.running_mean is None and m.running_var is None)
    track = not m.training or m.track_running_stats
    return F.batch_norm(y, m.running_mean if track else None, m.running_var if track else None,
                        weight, bias, use_batch, factor, m.eps)


def conv(x: torch.Tensor, c: nn.Conv2d, stride=None) -> torch.Tensor:
    return F.conv2d(x, c.weight, c.bias, c.stride if stride is None else stride, c.padding,
                    c.dilation, c.groups)


def pw(x: torch.Tensor, c: nn.Conv2d) -> torch.Tensor:
    if CFG["pw_linear"] and x.is_contiguous(memory_format=CL) and c.bias is None:
        return F.linear(x.permute(0, 2, 3, 1), c.weight.flatten(1)).permute(0, 3, 1, 2)
    return F.conv2d(x, c.weight, c.bias)


def poly_in(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (4N, C, H/2, W/2): the four 2x2 polyphase components stacked on batch."""
    n, c, h, w = x.shape
    return (x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c)
            .permute(2, 4, 0, 1, 3, 5).reshape(4 * n, h // 2, w // 2, c).permute(0, 3, 1, 2))


def poly_out(y: torch.Tensor) -> torch.Tensor:
    n4, c, h2, w2 = y.shape
    n = n4 // 4
    return (y.permute(0, 2, 3, 1).reshape(2, 2, n, h2, w2, c).permute(2, 3, 0, 4, 1, 5)
            .reshape(n, 2 * h2, 2 * w2, c).permute(0, 3, 1, 2))


def embed_dilated(w: torch.Tensor, d: int) -> torch.Tensor:
    """A k x k kernel at dilation d as the equivalent dense (d(k-1)+1)^2 kernel."""
    C, g, k, _ = w.shape
    full = F.pad(w.reshape(C, g, k, 1, k, 1), (0, d - 1, 0, 0, 0, d - 1))
    K = d * (k - 1) + 1
    return full.reshape(C, g, k * d, k * d)[:, :, :K, :K]


class _Input:
    """Work shared by every edge that reads one cell state."""

    def __init__(self, x: torch.Tensor, stride: int) -> None:
        self.x, self.stride = x, stride
        self._cache: dict = {}

    def relu(self) -> torch.Tensor:
        r = self._cache.get("relu")
        if r is None:
            r = self._cache["relu"] = F.relu(self.x)
        return r

    def relu_sub(self) -> torch.Tensor:
        r = self._cache.get("relu_sub")
        if r is None:
            r = self._cache["relu_sub"] = self.relu()[:, :, ::2, ::2].contiguous(
                memory_format=CL if CFG["channels_last"] else torch.contiguous_format)
        return r

    def relu_poly(self) -> torch.Tensor:
        r = self._cache.get("relu_poly")
        if r is None:
            r = self._cache["relu_poly"] = poly_in(self.relu())
        return r

    def pooled_bn(self, op: nn.Sequential, scale) -> torch.Tensor:
        """scale * BN(pool(x)) for this edge's (pool, BN) pair, the pooling shared."""
        pool, m = op[0], op[1]
        key = ("pool", type(pool), pool.kernel_size, pool.stride, pool.padding,
               getattr(pool, "count_include_pad", None), getattr(pool, "dilation", None),
               getattr(pool, "ceil_mode", None))
        p = self._cache.get(key)
        if p is None:
            p = self._cache[key] = pool(self.x)
        if not (m.training and m.track_running_stats and m.weight is None):
            return bn(p, m, scale)
        # Training: the normalised pooling is the same for every edge of this input.
        zkey = key + ("z", m.eps)
        z = self._cache.get(zkey)
        if z is None:
            z = self._cache[zkey] = F.batch_norm(p, None, None, None, None, True, 0.0, m.eps)
            with torch.no_grad():
                var, mean = torch.var_mean(p, dim=(0, 2, 3), correction=1)
            self._cache[zkey + ("stats",)] = (mean, var)
        mean, var = self._cache[zkey + ("stats",)]
        m.num_batches_tracked.add_(1)
        factor = m.momentum if m.momentum is not None else 1.0 / float(m.num_batches_tracked)
        with torch.no_grad():
            m.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
            m.running_var.mul_(1 - factor).add_(var, alpha=factor)
        return ("mul", scale, z)


def _dil(inp: _Input, op: DilConv, scale, poly_terms: list):
    """DilConv (ReLU, depthwise dilated, 1x1, BN) * scale; may land in polyphase space."""
    dw, pwc, m = op[1], op[2], op[3]
    k, d, s, p = dw.kernel_size[0], dw.dilation[0], dw.stride[0], dw.padding[0]
    x = inp.x
    square = dw.kernel_size[0] == dw.kernel_size[1] and dw.dilation[0] == dw.dilation[1] \
        and dw.stride[0] == dw.stride[1] and dw.padding[0] == dw.padding[1]
    same = square and k % 2 == 1 and p == d * (k // 2) and dw.bias is None
    if same and d == 2 and s == 2 and CFG["dil_s2_sub"]:
        y = F.conv2d(inp.relu_sub(), dw.weight, None, 1, k // 2, 1, dw.groups)
        return bn(pw(y, pwc), m, scale)
    if same and d == 2 and s == 1:
        mode = CFG["dil3"] if k == 3 else CFG["dil5"]
        if mode == "poly" and min(x.shape[-2:]) < CFG["poly_min3" if k == 3 else "poly_min5"]:
            mode = CFG["small3" if k == 3 else "small5"]
        if mode == "poly" and x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0:
            y = F.conv2d(inp.relu_poly(), dw.weight, None, 1, k // 2, 1, dw.groups)
            poly_terms.append(bn(pw(y, pwc), m, scale))
            return None
        if mode == "embed":
            K = d * (k - 1) + 1
            y = F.conv2d(inp.relu(), embed_dilated(dw.weight, d), None, 1, K // 2, 1, dw.groups)
            return bn(pw(y, pwc), m, scale)
    y = conv(inp.relu(), dw)
    return bn(pw(y, pwc), m, scale)


def _sep(inp: _Input, op: SepConv, scale):
    a, b = op[0], op[1]
    y = conv(inp.relu(), a[1])
    y = bn(pw(y, a[2]), a[3])
    y = conv(F.relu(y), b[1])
    return bn(pw(y, b[2]), b[3], scale)


def _fr(inp: _Input, op: FactorizedReduce, scale=None):
    # A 1x1 stride-2 conv is a 1x1 conv of the even pixels. Done that way on purpose: oneDNN's
    # channels-last 1x1 stride-2 weight gradient corrupts the heap on small inputs (torch 2.14).
    r = inp.relu()
    fmt = CL if CFG["channels_last"] else torch.contiguous_format
    a = r[:, :, ::2, ::2].contiguous(memory_format=fmt)
    b = r[:, :, 1::2, 1::2].contiguous(memory_format=fmt)
    c1, c2 = op.conv_1, op.conv_2
    assert c1.kernel_size == (1, 1) and c1.stride == (2, 2) and c1.padding == (0, 0)
    out = torch.cat([F.conv2d(a, c1.weight, c1.bias), F.conv2d(b, c2.weight, c2.bias)], dim=1)
    return bn(out, op.bn, scale)


def _preprocess(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(m, FactorizedReduce):
        return _fr(_Input(x, 2), m)
    if (isinstance(m, nn.Sequential) and len(m) == 3 and isinstance(m[0], nn.ReLU)
            and isinstance(m[1], nn.Conv2d) and isinstance(m[2], nn.BatchNorm2d)
            and m[1].stride == (1, 1)):
        return bn(conv(F.relu(x), m[1]), m[2])
    return m(x)


def _accumulate(acc, term):
    if isinstance(term, tuple):  # ("mul", scale, z)
        _, s, z = term
        if acc is None:
            return z * s
        if CFG["addcmul"]:
            return torch.addcmul(acc, s, z)
        return acc + z * s
    return term if acc is None else acc + term


def _noise(op: NoiseOp, x: torch.Tensor, memory_format) -> torch.Tensor:
    """NoiseOp, drawn in the memory format the plain path would see, so the same RNG state
    gives the same values."""
    if op.stride != 1:
        x = x[:, :, :: op.stride, :: op.stride]
    return torch.randn(x.shape, dtype=x.dtype, device=x.device).contiguous(
        memory_format=memory_format).mul_(op.std).add_(op.mean) if memory_format == CL else \
        torch.randn(x.shape, dtype=x.dtype, device=x.device).mul_(op.std).add_(op.mean)


def cell_forward(cell, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor,
                 noise_format=torch.contiguous_format) -> torch.Tensor:
    plan = cell_plan(cell)
    states = [_preprocess(cell.preprocess0, s0), _preprocess(cell.preprocess1, s1)]
    inputs = [_Input(states[0], 2 if cell.reduction else 1),
              _Input(states[1], 2 if cell.reduction else 1)]
    offset = 0
    for _ in range(cell._steps):
        acc = None
        poly_terms: list = []
        for j, inp in enumerate(inputs):
            e = offset + j
            ops = cell._ops[e]._ops
            ws = weights[e].unbind(0)
            for k, kind in plan[e]:
                op, w = ops[k], ws[k]
                if kind == "none":
                    continue
                if kind == "skip":
                    term = ("mul", w, inp.x)
                elif kind == "pool":
                    term = inp.pooled_bn(op, w)
                elif kind == "sep":
                    term = _sep(inp, op, w)
                elif kind == "dil":
                    term = _dil(inp, op, w, poly_terms)
                    if term is None:
                        continue
                elif kind == "noise":
                    term = ("mul", w, _noise(op, inp.x, noise_format))
                elif kind == "fr":
                    term = _fr(inp, op, w)
                else:
                    term = ("mul", w, op(inp.x))
                acc = _accumulate(acc, term)
        if poly_terms:
            ps = poly_terms[0]
            for t in poly_terms[1:]:
                ps = ps + t
            ps = poly_out(ps)
            acc = ps if acc is None else acc + ps
        if acc is None:  # every op into this node is 'none'
            s = inputs[0].stride
            acc = inputs[0].x[:, :, ::s, ::s].mul(0.0)
        offset += len(inputs)
        states.append(acc)
        inputs.append(_Input(acc, 1))
    return torch.cat(states[-cell._multiplier:], dim=1)


def network_forward(net, x: torch.Tensor, cell_weights) -> torch.Tensor:
    noise_format = CL if x.dim() == 4 and x.is_contiguous(memory_format=CL) \
        and not x.is_contiguous() else torch.contiguous_format
    if CFG["channels_last"] and x.dim() == 4:
        x = x.contiguous(memory_format=CL)
    s0 = s1 = net.stem(x)
    for cell, w in zip(net.cells, cell_weights):
        s0, s1 = s1, cell_forward(cell, s0, s1, w, noise_format)
    return net.classifier(net.global_pooling(s1).flatten(1))
