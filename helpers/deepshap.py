"""DeepSHAP: DeepLift (Rescale) multipliers under ``shap.DeepExplainer``'s rules, averaged over references.

For an input ``x`` and references ``r_k``, ``A = mean_k (x - r_k) * m_k``, where ``m_k`` is a "gradient" of the
target logit in which every non-linearity's derivative is replaced by a finite difference between the two points
(Lundberg & Lee 2017). Completeness: ``sum A = f(x) - mean_k f(r_k)``. The rules are shap's:

* element-wise non-linearities (ReLU, Softplus, ..., and ``nn.Softmax``, which shap also treats element-wise):
  ``m = (f(a) - f(b)) / (a - b)``, or the ordinary derivative where ``|a - b| < 1e-6``;
* ``nn.MaxPool1d/2d/3d``: shap's cross-max rule, with the contributions of overlapping windows *summed* (shap
  scatters them with ``max_unpool``, which keeps one and breaks completeness on e.g. ``MaxPool2d(3, 2, 1)``);
* linear modules (Linear, convolutions, batch norm in eval mode, average pools, Flatten, Dropout in eval mode)
  pass the multipliers back like a gradient; anything else is refused (no silent plain gradient).

Two implementations compute the same numbers: :func:`deeplift_multipliers`, for any model, by forward hooks on one
batched ``[x; r]`` pass; and :func:`deepshap_multipliers`, for chains of modules (:func:`deepshap_chain`; every model
in :mod:`helpers.models`) on the CPU: one forward pass of the inputs, one of the references, then one explicit
backward pass over the pairs, its two rules fused numba kernels (:mod:`helpers.deepshap_kernels`).
"""

from __future__ import annotations

import math
import weakref
from typing import List, Optional, Tuple

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from . import deepshap_kernels as kernels

__all__ = ["ELEMENTWISE", "LINEAR", "deeplift_multipliers", "deepshap_multipliers", "deepshap_chain"]

ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.GELU, nn.SiLU)
LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
          nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Unflatten, nn.Identity,
          nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_POOLS = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}
_FUNCTIONAL = {F.relu, torch.relu, F.relu6, F.elu, F.leaky_relu, F.gelu, F.silu, F.softplus, F.sigmoid, F.tanh,
               torch.sigmoid, torch.tanh, F.softmax, torch.softmax, F.max_pool1d, F.max_pool2d, F.max_pool3d,
               torch.max_pool2d, torch.clamp, torch.maximum, torch.minimum}
_METHODS = {"relu", "relu_", "sigmoid", "tanh", "softmax", "clamp", "clamp_", "max", "min"}
_RESCALE_EPS, _MAXPOOL_EPS = 1e-6, 1e-7  # shap's thresholds below which an input difference counts as zero


# ------------------------------------------------------------------ the general version: hooks on one [x; r] pass

class _Rule(torch.autograd.Function):
    """Identity on a module's output in the forward pass; the backward pass applies the module's DeepLift rule on the
    ``[inputs; references]`` batch and returns the multipliers at the module's input (both halves)."""

    @staticmethod
    def forward(ctx, inp, out, module):
        ctx.save_for_backward(inp, out)
        ctx.module = module
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g):
        inp, out = ctx.saved_tensors
        mod, (xi, ri), twice = ctx.module, inp.chunk(2), (2,) + (1,) * (inp.dim() - 1)
        din = xi - ri
        if type(mod) in _POOLS:
            y, ry = out.chunk(2)
            cross = torch.max(y, ry)
            _, idx = _POOLS[type(mod)](inp, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode, True)
            b, c, v = inp.shape[0], inp.shape[1], g * torch.cat([cross - ry, y - cross])
            flat = v.new_zeros(b, c, math.prod(inp.shape[2:]))                     # summed where windows overlap
            flat.scatter_add_(2, idx.reshape(b, c, -1), v.reshape(b, c, -1))
            xmax, rmax = flat.view(inp.shape).chunk(2)
            small = din.abs() < _MAXPOOL_EPS
            return torch.where(small, 0.0, (xmax + rmax) / torch.where(small, 1.0, din)).repeat(twice), None, None
        with torch.enable_grad():
            i2 = inp.detach().requires_grad_(True)
            (ordinary,) = torch.autograd.grad(mod.forward(i2), i2, g)  # forward(): no hooks
        xo, ro = out.chunk(2)
        small = din.abs().repeat(twice) < _RESCALE_EPS
        return torch.where(small, ordinary, g * ((xo - ro) / din).repeat(twice)), None, None


def _check_rules(model: nn.Module) -> None:
    """Raise for modules without a DeepLift rule and for functional non-linearities ``torch.fx`` finds in forward."""
    for name, mod in model.named_modules():
        if not list(mod.children()) and not isinstance(mod, ELEMENTWISE + LINEAR + (nn.Softmax,) + tuple(_POOLS)):
            raise ValueError(f"deepshap has no rule for module {name!r} ({type(mod).__name__}); shap would silently "
                             f"use its plain gradient. Use method='ig' or 'expected_gradients' for this model")
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - not traceable: the additivity check still catches a missing rule
        return
    for node in graph.nodes:
        if (node.op == "call_function" and node.target in _FUNCTIONAL) or (
                node.op == "call_method" and node.target in _METHODS):
            raise ValueError(f"deepshap cannot see the functional non-linearity {node.target} in the model's forward "
                             f"(no module to apply a rule to); use nn.ReLU() etc. modules, or method='ig'")


def deeplift_multipliers(model: nn.Module, x: torch.Tensor, references: torch.Tensor,
                         target: torch.Tensor) -> torch.Tensor:
    """DeepLift multipliers ``m`` (shape of ``x``, ``M x ...``) of logit ``target`` (``M``) for the pairs
    ``(x_i, references_i)``, with ``sum_j m_ij (x_ij - r_ij) = f_t(x_i) - f_t(r_i)`` (completeness).

    One forward and one backward pass of ``2 M`` rows; works for any model built of modules with a rule. In-place
    non-linearities run out of place for the call; functional ones (``F.relu``) are refused where ``torch.fx`` sees
    them.
    """
    _check_rules(model)
    inplace = [m for m in model.modules() if getattr(m, "inplace", False)]   # run out of place during the call
    handles = [m.register_forward_hook(lambda mod, inp, out: _Rule.apply(inp[0], out, mod))
               for m in model.modules() if isinstance(m, ELEMENTWISE + (nn.Softmax,) + tuple(_POOLS))]
    try:
        for m in inplace:
            m.inplace = False
        with torch.enable_grad():
            joint = torch.cat([x, references]).detach().requires_grad_(True)
            sel = model(joint).gather(1, torch.cat([target, target]).view(-1, 1)).sum()
            (g,) = torch.autograd.grad(sel, joint)
    finally:
        for m in inplace:
            m.inplace = True
        for h in handles:
            h.remove()
    return g[x.shape[0]:].detach()  # shap reads the reference half (equal to the other up to the fallbacks)


# ------------------------------------------------------------------ the fast version for chains of modules

_CHAINS: "weakref.WeakKeyDictionary[nn.Module, Optional[List[nn.Module]]]" = weakref.WeakKeyDictionary()


def deepshap_chain(model: nn.Module, x: Optional[torch.Tensor] = None) -> Optional[List[nn.Module]]:
    """The model's forward pass as a list of modules applied one after the other (cached), or ``None`` if it is not
    one (found with ``torch.fx``; supported: element-wise non-linearities, Conv2d, non-overlapping MaxPool2d, Linear,
    Flatten, Identity, Dropout, ``torch.flatten``) or, given inputs ``x``, if they are not float32 on the CPU."""
    if x is not None and (x.device.type != "cpu" or x.dtype != torch.float32):
        return None
    if model in _CHAINS:
        return _CHAINS[model]
    chain: Optional[List[nn.Module]] = []
    try:
        gm, prev = torch.fx.symbolic_trace(model), None
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                assert prev is None
            elif node.op == "output":
                assert node.args[0] is prev
            else:
                assert not node.kwargs and node.args and node.args[0] is prev and len(node.users) == 1
                if node.op == "call_module":
                    mod = gm.get_submodule(node.target)
                    assert len(node.args) == 1 and _chain_ok(mod)
                    chain.append(mod)
                else:
                    assert node.op == "call_function" and node.target is torch.flatten and len(node.args) <= 3
                    chain.append(nn.Flatten(*node.args[1:]) if len(node.args) > 1 else nn.Flatten(0, -1))
            prev = node
    except Exception:  # noqa: BLE001 - anything fx cannot trace or we cannot follow uses the general version
        chain = None
    _CHAINS[model] = chain
    return chain


def _chain_ok(mod: nn.Module) -> bool:
    if isinstance(mod, ELEMENTWISE):
        return not getattr(mod, "inplace", False)
    if isinstance(mod, nn.Conv2d):
        return mod.padding_mode == "zeros" and not isinstance(mod.padding, str)
    if isinstance(mod, nn.MaxPool2d):   # the kernel's rule: every input cell in at most one window
        k, s = _pair(mod.kernel_size), _pair(mod.stride)
        return k == s and _pair(mod.padding) == (0, 0) and _pair(mod.dilation) == (1, 1) and not mod.return_indices
    return isinstance(mod, (nn.Linear, nn.Flatten, nn.Identity, nn.Dropout))


def _record(chain: List[nn.Module], z: torch.Tensor, reference: bool) -> List[tuple]:
    """Run ``z`` (``B x ...``) through the chain, keeping per layer ``(input, output, aux)``: the argmax indices of a
    pool, the derivative ``f'(input)`` of an element-wise layer for references (shap's fallback where a ~ b)."""
    recs = []
    for mod in chain:
        aux = None
        if isinstance(mod, nn.MaxPool2d):
            out, aux = F.max_pool2d(z, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode, True)
        else:
            out = mod(z)
            if reference and isinstance(mod, ELEMENTWISE):
                with torch.enable_grad():
                    zz = z.detach().clone().requires_grad_(True)
                    (aux,) = torch.autograd.grad(mod(zz).sum(), zz)
        recs.append((z, out, aux))
        z = out
    return recs


def _np(t: torch.Tensor, *shape: int):
    """A numpy view ``rows x D`` (or ``shape``) of a CPU tensor; one the kernel writes into must be contiguous."""
    t = t.detach().contiguous()
    return t.reshape(shape if shape else (t.shape[0], -1)).numpy()


def _conv_input_grad(mod: nn.Conv2d, g: torch.Tensor, in_shape: Tuple[int, ...]) -> torch.Tensor:
    """``(d conv / d input)^T g`` (the map is linear): a batched matrix product + ``F.fold`` for few input
    channels, a convolution with the flipped kernel for stride 1, else ``torch.nn.grad.conv2d_input``."""
    kh, kw = mod.kernel_size
    pad = mod.padding
    if mod.groups == 1 and mod.in_channels <= 4:
        p, cout = g.shape[0], g.shape[1]
        w = mod.weight.reshape(cout, -1).t()                                        # (Cin kh kw) x Cout
        cols = torch.bmm(w.expand(p, *w.shape), g.reshape(p, cout, -1))              # P x (Cin kh kw) x L
        return F.fold(cols, in_shape[-2:], mod.kernel_size, mod.dilation, mod.padding, mod.stride)
    if mod.groups == 1 and tuple(mod.stride) == (1, 1) and tuple(mod.dilation) == (1, 1) and max(pad) < min(kh, kw):
        return F.conv2d(g, mod.weight.flip(2, 3).transpose(0, 1), padding=(kh - 1 - pad[0], kw - 1 - pad[1]))
    return torch.nn.grad.conv2d_input(in_shape, mod.weight, g, mod.stride, mod.padding, mod.dilation, mod.groups)


def _backward_pairs(chain: List[nn.Module], xr: List[tuple], rr: List[tuple], g: torch.Tensor, m: int, k: int,
                    shared: bool) -> torch.Tensor:
    """Multipliers ``m x K x ...`` of the pairs by one explicit backward pass from ``g`` (``m K x C``, one-hot).

    ``xr``: records of ``m`` inputs; ``rr``: of the ``K`` shared references (``shared``) or of ``m K`` references.
    """
    p = m * k
    for mod, (xi, xo, xaux), (ri, ro, raux) in zip(reversed(chain), reversed(xr), reversed(rr)):
        shape = tuple(xi.shape[1:])
        if isinstance(mod, nn.Linear):
            g = g @ mod.weight
        elif isinstance(mod, nn.Conv2d):
            g = _conv_input_grad(mod, g, (p,) + shape)
        elif isinstance(mod, nn.Flatten):
            g = g.reshape((p,) + shape)
        elif isinstance(mod, ELEMENTWISE):
            g = g.contiguous()
            kernels.rescale_pairs(_np(g), _np(xi), _np(xo), _np(ri), _np(ro), _np(raux), k, shared, _RESCALE_EPS)
        elif isinstance(mod, nn.MaxPool2d):
            gi = torch.empty((p,) + shape, dtype=g.dtype)  # the kernel writes every cell
            v = [_np(t, t.shape[0], shape[0], -1) for t in (gi, g, xo, ro, xi, ri, xaux, raux)]
            kernels.maxpool_pairs(*v, k, shared, _MAXPOOL_EPS)
            g = gi
    return g.view((m, k) + tuple(g.shape[1:]))


def deepshap_multipliers(model: nn.Module, x: torch.Tensor, references: torch.Tensor, target: torch.Tensor, *,
                         pairs_per_chunk: int = 1024) -> Tuple[torch.Tensor, torch.Tensor]:
    """DeepSHAP of ``model``'s logit ``target`` (``N``) at ``x`` (``N x ...``) against ``references``
    (``(1|N) x K x ...``): ``(A, G)`` like ``x``, ``A = mean_k (x - r_k) m_k`` and ``G = mean_k m_k``.

    Needs a chain and float32 CPU inputs (:func:`deepshap_chain`); equal to :func:`deeplift_multipliers` up to
    round-off.
    """
    chain = deepshap_chain(model, x)
    if chain is None:
        raise ValueError("deepshap_multipliers needs a chain of supported modules and float32 CPU inputs; "
                         "use deeplift_multipliers")
    n, k, shared = x.shape[0], references.shape[1], references.shape[0] == 1
    attr, mult = torch.empty_like(x), torch.empty_like(x)
    with torch.no_grad():
        rr = _record(chain, references[0], True) if shared else None
        m_per = max(1, pairs_per_chunk // k)
        for a in range(0, n, m_per):  # chunks of whole inputs; every pair of a chunk is one batched pass
            b = min(n, a + m_per)
            m = b - a
            if not shared:
                rr = _record(chain, references[a:b].reshape((m * k,) + x.shape[1:]), True)
            xr = _record(chain, x[a:b], False)
            g = torch.zeros(m * k, xr[-1][1].shape[1], device=x.device, dtype=x.dtype)
            g.scatter_(1, target[a:b].repeat_interleave(k).view(-1, 1), 1.0)
            g = _backward_pairs(chain, xr, rr, g, m, k, shared)
            attr[a:b] = ((x[a:b].unsqueeze(1) - (references if shared else references[a:b])) * g).mean(1)
            mult[a:b] = g.mean(1)
    return attr, mult
