"""DeepLift (Rescale rule) multipliers with ``shap.DeepExplainer``'s rules, and DeepSHAP over a background set.

DeepSHAP (Lundberg & Lee 2017) explains input ``x`` against each reference ``r_k`` of a background set with
DeepLift's multipliers ``m_k`` (a "gradient" in which every non-linearity's derivative is replaced by a finite
difference between the two points) and averages: ``A = mean_k (x - r_k) * m_k``. The rules are shap's:

* element-wise non-linearities (ReLU, Softplus, ...): ``m = (f(a) - f(b)) / (a - b)`` for the unit's inputs
  ``a`` (at ``x``) and ``b`` (at ``r``); where ``|a - b| < 1e-6`` the ordinary derivative ``f'(b)``;
* ``nn.MaxPool2d``: shap's cross-max rule;
* linear modules (Linear, Conv2d, Flatten, Dropout in eval mode, ...) pass the multipliers back like a gradient.

Two implementations compute the same numbers:

* :func:`deepshap_multipliers` -- the fast path, for models whose forward pass is a chain of supported modules
  (found with ``torch.fx``; every model in :mod:`helpers.models` is one). It runs **one** forward pass of the ``N``
  inputs and **one** of the ``K`` references, recording each layer's input and output, and then one explicit
  backward pass over the ``N x K`` pairs only: the multipliers are broadcast from the recorded ``N`` and ``K``
  activations, convolutions are transposed with ``torch.nn.grad.conv2d_input``, and no autograd graph is built.
  ``shap.DeepExplainer`` instead runs a forward and an autograd backward pass of ``2 K`` rows per input, with every
  rule computed by hooks; and the hook version below runs ``2 N K`` rows. On the 2-core CPU the fast path is what
  makes ``attribute(method="deepshap")`` faster than shap (``benchmarks/``, row ``shap``).
* :func:`deeplift_multipliers` -- the general version for any ``nn.Module`` built of distinct modules: forward
  hooks on one batched ``[x; r]`` pass replace each rule's backward (a custom ``autograd.Function``).

Both return the multipliers of the *reference* half, as shap does.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import deeplift_kernels as kernels

__all__ = ["deeplift_multipliers", "deepshap_multipliers", "deepshap_chain", "ELEMENTWISE"]

#: element-wise non-linearities that get the Rescale rule
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.GELU, nn.SiLU)
#: modules the fast path passes multipliers through unchanged (in eval mode)
_PASS_THROUGH = (nn.Identity, nn.Dropout)

# shap's thresholds below which an input difference counts as zero
_RESCALE_EPS = 1e-6
_MAXPOOL_EPS = 1e-7


# ----------------------------------------------------------------------------------------------------------------
# the general version: hooks on one [x; r] pass
# ----------------------------------------------------------------------------------------------------------------


class _DeepLiftRule(torch.autograd.Function):
    """Identity on a module's output ``out`` in the forward pass (saving ``inp``, ``out`` and the module); the
    subclasses replace the backward pass by a DeepLift rule on the ``[inputs; references]`` batch."""

    @staticmethod
    def forward(ctx, inp, out, module):  # noqa: D401
        ctx.save_for_backward(inp, out)
        ctx.module = module
        return out.view_as(out)


class _RescaleFn(_DeepLiftRule):
    """DeepLift's Rescale multiplier ``dy/dx`` in the backward pass.

    The batch is ``[inputs; references]`` (2M rows); the multiplier of row ``i`` and ``M + i`` is
    ``(y_i - y_{M+i}) / (x_i - x_{M+i})``, or the ordinary gradient where ``|x_i - x_{M+i}| < 1e-6`` (as in shap).
    """

    @staticmethod
    def backward(ctx, g):
        inp, out = ctx.saved_tensors
        with torch.enable_grad():
            i2 = inp.detach().requires_grad_(True)
            (ordinary,) = torch.autograd.grad(ctx.module.forward(i2), i2, g)  # forward(): no hooks
        xi, ri = inp.chunk(2)
        xo, ro = out.chunk(2)
        din = (xi - ri).repeat((2,) + (1,) * (inp.dim() - 1))
        dout = (xo - ro).repeat((2,) + (1,) * (inp.dim() - 1))
        small = din.abs() < _RESCALE_EPS
        mult = dout / torch.where(small, torch.ones_like(din), din)
        return torch.where(small, ordinary, g * mult), None, None


class _MaxPoolFn(_DeepLiftRule):
    """shap's DeepLift rule for max pooling on a ``[inputs; references]`` batch."""

    @staticmethod
    def backward(ctx, g):
        inp, out = ctx.saved_tensors
        mod = ctx.module
        xi, ri = inp.chunk(2)
        y, ry = out.chunk(2)
        cross = torch.max(y, ry)
        diffs = torch.cat([cross - ry, y - cross], 0)
        _, idx = F.max_pool2d(inp, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode, True)
        xmax, rmax = F.max_unpool2d(g * diffs, idx, mod.kernel_size, mod.stride, mod.padding,
                                    list(inp.shape)).chunk(2)
        din = xi - ri
        small = din.abs() < _MAXPOOL_EPS
        gi = torch.where(small, torch.zeros_like(din), (xmax + rmax) / torch.where(small, torch.ones_like(din), din))
        return gi.repeat((2,) + (1,) * (inp.dim() - 1)), None, None


def deeplift_multipliers(model: nn.Module, x: torch.Tensor, references: torch.Tensor,
                         target: torch.Tensor) -> torch.Tensor:
    """DeepLift-Rescale multipliers ``m`` (shape of ``x``) of logit ``target`` for the pairs ``(x_i, r_i)``.

    ``sum_j m_ij (x_ij - r_ij) = f_t(x_i) - f_t(r_i)`` (completeness). Forward hooks on one batched ``[x; r]``
    pass apply shap's rules in the backward pass, so the result matches ``shap.DeepExplainer`` at the cost of one
    forward and one backward pass of ``2 M`` images. Works for any model that uses a distinct module per
    non-linearity and no functional non-linearities; :func:`deepshap_multipliers` is the fast path for chains.
    """
    handles = []

    def hook_rescale(module, inputs, output):
        return _RescaleFn.apply(inputs[0], output, module)

    def hook_pool(module, inputs, output):
        return _MaxPoolFn.apply(inputs[0], output, module)

    for mod in model.modules():
        if isinstance(mod, ELEMENTWISE):
            if getattr(mod, "inplace", False):
                raise ValueError(f"deepshap needs out-of-place non-linearities; {mod} is in-place")
            handles.append(mod.register_forward_hook(hook_rescale))
        elif isinstance(mod, nn.MaxPool2d):
            handles.append(mod.register_forward_hook(hook_pool))
    try:
        with torch.enable_grad():
            joint = torch.cat([x, references]).detach().requires_grad_(True)
            out = model(joint)
            sel = out.gather(1, torch.cat([target, target]).view(-1, 1)).sum()
            (g,) = torch.autograd.grad(sel, joint)
    finally:
        for h in handles:
            h.remove()
    # shap reads the multipliers of the reference rows; both halves carry the same multipliers up to the
    # ordinary-gradient fallback where an input and its reference (nearly) coincide
    return g[x.shape[0]:].detach()


# ----------------------------------------------------------------------------------------------------------------
# the fast path: a chain of modules, one forward of inputs and references, one explicit backward over the pairs
# ----------------------------------------------------------------------------------------------------------------

_CHAINS: "weakref.WeakKeyDictionary[nn.Module, Optional[List[nn.Module]]]" = weakref.WeakKeyDictionary()


def _supported(mod: nn.Module) -> bool:
    if isinstance(mod, ELEMENTWISE):
        return not getattr(mod, "inplace", False)
    if isinstance(mod, nn.Conv2d):
        return mod.padding_mode == "zeros" and not isinstance(mod.padding, str)
    if isinstance(mod, nn.MaxPool2d):
        return not mod.return_indices
    return isinstance(mod, (nn.Linear, nn.Flatten) + _PASS_THROUGH)


def deepshap_chain(model: nn.Module) -> Optional[List[nn.Module]]:
    """The model's forward pass as a list of modules applied one after the other, or ``None`` if it is not one.

    Found with ``torch.fx.symbolic_trace``: every node must take the previous node's output as its only input and
    be a supported module (element-wise non-linearity, ``Conv2d``, ``MaxPool2d``, ``Linear``, ``Flatten``,
    ``Identity``, ``Dropout``) or ``torch.flatten``. Cached per model.
    """
    if model in _CHAINS:
        return _CHAINS[model]
    chain: Optional[List[nn.Module]] = []
    try:
        import torch.fx as fx

        gm = fx.symbolic_trace(model)
        prev = None
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                if prev is not None:
                    raise ValueError("more than one input")
            elif node.op == "output":
                if node.args[0] is not prev:
                    raise ValueError("the output is not the last node")
            elif node.kwargs or len(node.args) < 1 or node.args[0] is not prev or len(node.users) != 1:
                raise ValueError(f"node {node.name} does not continue a chain")
            elif node.op == "call_module":
                mod = gm.get_submodule(node.target)
                if len(node.args) != 1 or not _supported(mod):
                    raise ValueError(f"unsupported module {mod}")
                chain.append(mod)
            elif node.op == "call_function" and node.target is torch.flatten and len(node.args) <= 3:
                chain.append(nn.Flatten(*node.args[1:]) if len(node.args) > 1 else nn.Flatten(0, -1))
            else:
                raise ValueError(f"unsupported node {node.op} {node.target}")
            prev = node
    except Exception:  # noqa: BLE001 - anything fx cannot trace or we cannot follow uses the general version
        chain = None
    _CHAINS[model] = chain
    return chain


@dataclass
class _Record:
    """What the backward pass needs from one layer's forward pass (inputs ``N x ...``)."""

    inp: Optional[torch.Tensor] = None          # layer input (non-linear layers)
    out: Optional[torch.Tensor] = None          # layer output (non-linear layers)
    aux: Optional[torch.Tensor] = None          # f'(inp) for element-wise layers; argmax indices (int64) for pooling
    in_shape: Tuple[int, ...] = ()


def _simple_pool(mod: nn.MaxPool2d, in_shape: Sequence[int]) -> bool:
    """True when every input cell lies in exactly one window (kernel == stride, no padding/dilation/remainder)."""
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)
    k, s = pair(mod.kernel_size), pair(mod.stride if mod.stride is not None else mod.kernel_size)
    return (k == s and pair(mod.padding) == (0, 0) and pair(mod.dilation) == (1, 1)
            and in_shape[-2] % k[0] == 0 and in_shape[-1] % k[1] == 0)


def _record(chain: List[nn.Module], z: torch.Tensor, reference: bool) -> List[_Record]:
    """Run ``z`` (``B x ...``) through the chain, keeping what :func:`_backward_pairs` needs per layer."""
    recs = []
    for mod in chain:
        rec = _Record(in_shape=tuple(z.shape[1:]))
        if isinstance(mod, ELEMENTWISE):
            out = mod(z)
            rec.inp, rec.out = z, out
            if reference:          # the ordinary derivative at the reference: shap's fallback where a ~ b
                if isinstance(mod, nn.ReLU):
                    rec.aux = (z > 0).to(z.dtype)
                else:
                    with torch.enable_grad():
                        zz = z.detach().clone().requires_grad_(True)
                        (rec.aux,) = torch.autograd.grad(mod(zz).sum(), zz)
        elif isinstance(mod, nn.MaxPool2d):
            out, idx = F.max_pool2d(z, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode, True)
            rec.inp, rec.out, rec.aux = z, out, idx
        else:
            out = mod(z)
        recs.append(rec)
        z = out
    return recs


def _np(t: torch.Tensor, *shape: int):
    """A numpy view of a CPU tensor, reshaped to ``rows x D`` or to ``shape`` (for the kernels).

    A non-contiguous tensor is copied first, so a tensor the kernel writes into must already be contiguous (the
    callers make sure of it) or the writes would land in the copy.
    """
    t = t.detach().contiguous()
    return t.reshape(shape if shape else (t.shape[0], -1)).numpy()


def _conv_input_grad(mod: nn.Conv2d, g: torch.Tensor, in_shape: Tuple[int, ...]) -> torch.Tensor:
    """``(d conv / d input)^T g`` for ``g`` at the convolution's output (the map is linear; the bias drops out).

    Measured on the 2-core CPU (800 pairs of the MNIST CNN), against ``torch.nn.grad.conv2d_input``:

    * few input channels (the first layer: 16 -> 1 channels, whose single output channel vectorises poorly): one
      batched matrix product with the weights and ``F.fold`` (col2im), ~2x faster;
    * stride 1: a convolution with the flipped, transposed kernel, ~1.6x faster;
    * anything else: ``conv2d_input``.
    """
    kh, kw = mod.kernel_size
    if mod.groups == 1 and mod.in_channels <= 4:
        p, cout = g.shape[0], g.shape[1]
        w = mod.weight.reshape(cout, -1).t()                                        # (Cin kh kw) x Cout
        cols = torch.bmm(w.expand(p, *w.shape), g.reshape(p, cout, -1))              # P x (Cin kh kw) x L
        return F.fold(cols, in_shape[-2:], mod.kernel_size, mod.dilation, mod.padding, mod.stride)
    pad = mod.padding
    if (mod.groups == 1 and tuple(mod.stride) == (1, 1) and tuple(mod.dilation) == (1, 1)
            and pad[0] <= kh - 1 and pad[1] <= kw - 1):
        flipped = mod.weight.flip(2, 3).transpose(0, 1)
        return F.conv2d(g, flipped, padding=(kh - 1 - pad[0], kw - 1 - pad[1]))
    return torch.nn.grad.conv2d_input(in_shape, mod.weight, g, mod.stride, mod.padding, mod.dilation, mod.groups)


def _pairs(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Broadcastable views ``m x 1 x ...`` of input rows ``a`` and ``(1|m) x K x ...`` of reference rows ``b``."""
    return a.unsqueeze(1), b


def _rescale_rule(g: torch.Tensor, rx: _Record, rref: _Record, m: int, k: int, shared: bool,
                  fused: bool) -> torch.Tensor:
    """Rescale rule on ``g`` (``P x ...`` at the non-linearity's output) -> ``g`` at its input."""
    shape = rx.in_shape
    if fused:
        g = g.contiguous()
        kernels.rescale_pairs(_np(g), _np(rx.inp), _np(rx.out), _np(rref.inp), _np(rref.out), _np(rref.aux),
                              k, shared, _RESCALE_EPS)
        return g
    rshape = (1 if shared else m, k) + shape
    a, b = _pairs(rx.inp, rref.inp.view(rshape))
    fa, fb = _pairs(rx.out, rref.out.view(rshape))
    din = a - b                                               # m x K x ...
    mult = (fa - fb).div_(din)                                # inf / nan where din == 0: replaced next
    torch.where(din.abs_() < _RESCALE_EPS, rref.aux.view(rshape), mult, out=mult)
    return g.view((m, k) + shape).mul_(mult).view((m * k,) + shape)


def _maxpool_rule(mod: nn.MaxPool2d, g: torch.Tensor, rx: _Record, rref: _Record, m: int, k: int, shared: bool,
                  fused: bool) -> torch.Tensor:
    """shap's max-pool rule on ``g`` (``P x ...`` at the pool's output) -> ``g`` at its input."""
    shape, out_shape, p = rx.in_shape, tuple(rx.out.shape[1:]), m * k
    if fused and _simple_pool(mod, shape):
        c, hw, nwin = shape[0], shape[-2] * shape[-1], out_shape[-2] * out_shape[-1]
        gi = torch.empty((p,) + shape, dtype=g.dtype)     # the kernel writes every cell

        def v3(t, last):
            return _np(t, t.shape[0], c, last)
        kernels.maxpool_pairs(v3(gi, hw), v3(g, nwin), v3(rx.out, nwin), v3(rref.out, nwin), v3(rx.inp, hw),
                              v3(rref.inp, hw), v3(rx.aux, nwin), v3(rref.aux, nwin), k, shared, _MAXPOOL_EPS)
        return gi
    rshape_out = (1 if shared else m, k) + out_shape
    y, ry = _pairs(rx.out, rref.out.view(rshape_out))
    cross = torch.max(y, ry)
    gv = g.view((m, k) + out_shape)
    gx = gv * (cross - ry)
    gr = gv.mul_(y - cross)

    def unpool(v, idx):
        idx = idx.expand((m, k) + out_shape).reshape((p,) + out_shape)
        return F.max_unpool2d(v.reshape((p,) + out_shape), idx, mod.kernel_size, mod.stride, mod.padding,
                              list(shape[-2:])).view((m, k) + shape)
    num = unpool(gx, rx.aux.unsqueeze(1)) + unpool(gr, rref.aux.view(rshape_out))
    xi, ri = _pairs(rx.inp, rref.inp.view((1 if shared else m, k) + shape))
    din = xi - ri
    small = din.abs() < _MAXPOOL_EPS
    return num.div_(din.masked_fill_(small, 1.0)).masked_fill_(small, 0.0).view((p,) + shape)


def _backward_pairs(chain: List[nn.Module], xr: List[_Record], rr: List[_Record], target: torch.Tensor, m: int,
                    k: int, shared: bool, n_out: int, dtype: torch.dtype) -> torch.Tensor:
    """Multipliers of the ``m x K`` pairs (``m x K x ...`` input shape) by one explicit backward pass.

    ``xr``: records of ``m`` inputs; ``rr``: records of the ``K`` shared references (``shared``) or of the
    ``m * K`` per-input references (viewed ``m x K x ...``).
    """
    dev = target.device
    p = m * k
    fused = kernels.AVAILABLE and dev.type == "cpu" and dtype == torch.float32
    g = torch.zeros(p, n_out, device=dev, dtype=dtype)
    g.scatter_(1, target.repeat_interleave(k).view(-1, 1), 1.0)
    for mod, rx, rref in zip(reversed(chain), reversed(xr), reversed(rr)):
        if isinstance(mod, nn.Linear):
            g = g @ mod.weight
        elif isinstance(mod, nn.Conv2d):
            g = _conv_input_grad(mod, g, (p,) + rx.in_shape)
        elif isinstance(mod, nn.Flatten):
            g = g.reshape((p,) + rx.in_shape)
        elif isinstance(mod, _PASS_THROUGH):
            pass
        elif isinstance(mod, ELEMENTWISE):
            g = _rescale_rule(g, rx, rref, m, k, shared, fused)
        elif isinstance(mod, nn.MaxPool2d):
            g = _maxpool_rule(mod, g, rx, rref, m, k, shared, fused)
        else:  # pragma: no cover - deepshap_chain admits only the modules above
            raise TypeError(f"no DeepLift rule for {type(mod).__name__}")
    return g.view((m, k) + tuple(g.shape[1:]))


def deepshap_multipliers(model: nn.Module, x: torch.Tensor, references: torch.Tensor, target: torch.Tensor, *,
                         pairs_per_chunk: int = 1024) -> Tuple[torch.Tensor, torch.Tensor]:
    """DeepSHAP of ``model``'s logit ``target`` at ``x`` against every reference: ``(A, G)``, both shaped like ``x``.

    ``A = mean_k (x - r_k) * m_k`` and ``G = mean_k m_k`` with ``m_k`` the DeepLift multipliers of the pair
    ``(x, r_k)`` under shap's rules (identical to :func:`deeplift_multipliers` and ``shap.DeepExplainer``).

    Args:
        model: a chain of supported modules (:func:`deepshap_chain` is not ``None``), in eval mode.
        x: inputs ``N x ...``; references: ``(1|N) x K x ...`` (a shared background set or per-input sets).
        target: LongTensor ``N``.
        pairs_per_chunk: (input, reference) pairs per explicit backward pass (memory: a few activation-sized
            tensors per pair).
    """
    chain = deepshap_chain(model)
    if chain is None:
        raise ValueError("deepshap_multipliers needs a model whose forward pass is a chain of supported modules; "
                         "use deeplift_multipliers for others")
    n, k = x.shape[0], references.shape[1]
    shared = references.shape[0] == 1
    dtype = x.dtype
    with torch.no_grad():
        n_out = model(x[:1]).shape[1]
        ref_recs = _record(chain, references[0], True) if shared else None
        m_per = max(1, pairs_per_chunk // k)
        attr, mult = torch.empty_like(x), torch.empty_like(x)
        for a in range(0, n, m_per):      # chunks of whole inputs; every pair of a chunk is one batched pass
            b = min(n, a + m_per)
            m = b - a
            rr = ref_recs if shared else _record(chain, references[a:b].reshape((m * k,) + x.shape[1:]), True)
            xr = _record(chain, x[a:b], False)
            g = _backward_pairs(chain, xr, rr, target[a:b], m, k, shared, n_out, dtype)   # m x K x ...
            r = references if shared else references[a:b]
            attr[a:b] = ((x[a:b].unsqueeze(1) - r) * g).mean(1)
            mult[a:b] = g.mean(1)
    return attr, mult
