"""Max-sensitivity (Yeh et al. 2019, Def. 3.1): ``SENS_MAX(Φ, f, x, r) = max_{‖y - x‖_∞ <= r} ‖Φ(y) - Φ(x)‖``,
estimated with uniform samples of the L∞ ball, the same for every input (common random numbers, drawn by
:func:`helpers.infidelity.generator`); the relative form divides by ``‖Φ(x)‖`` (captum, the authors' code)."""

from __future__ import annotations

import math
from typing import Dict, Union

import torch
from torch import nn

from .batching import bytes_per_image, chunk_size_for, run_chunked
from .infidelity import SAMPLE_BLOCK, generator, pack_like, resolve_target
from .smoothing import Explain, call_explain
from .validation import as_classifier, check_images, check_n_samples, check_target, model_device

__all__ = ["sensitivity_max"]

def sensitivity_max(explain: Explain, x: torch.Tensor, radius: float = 0.02, n_samples: int = 10, seed: int = 0, *,
                    target=None, form: Union[str, tuple] = "relative", norm: Union[str, float] = "fro"
                    ) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
    """``max_j ‖Φ(x + z_j) - Φ(x)‖`` over ``z_j ~ Uniform([-r, r]^d)``, ``j = 1..n_samples`` -> ``N`` (float32, CPU).

    ``explain(x, target) -> Tensor like x`` (or ``explain(x)``); with an ``explain.model`` and ``target=None`` the
    target is the prediction at ``x`` for every copy. ``x``: ``N x ...`` or a tuple of them (``explain`` then takes
    and returns tuples; the ball and the norms are over all inputs). At ``radius = 0`` the value is the explanation's
    own noise floor. ``form``: ``"relative"`` ``‖ΔΦ‖ / ‖Φ(x)‖`` (a zero norm counts as 1), ``"absolute"`` ``‖ΔΦ‖``,
    ``"lipschitz"`` ``‖ΔΦ‖ / ‖z‖``, or a tuple of them (a dict ``form -> N`` from the same samples); ``norm``: of
    ``ΔΦ`` (``"fro"`` = L2, or any ``p``).
    """
    if isinstance(x, (tuple, list)):                          # several inputs: explain the packed N x D tensor
        xs, user, sizes = tuple(x), explain, [check_images(t, f"x[{i}]")[0].numel() for i, t in enumerate(x)]
        if len({t.shape[0] for t in xs}) > 1:
            raise ValueError(f"every input of x must have N rows, got {[t.shape[0] for t in xs]}")
        x = torch.cat([t.flatten(1) for t in xs], 1)

        def explain(y, target=None):  # noqa: F811 - the user's explain seen on packed inputs
            parts = tuple(v.reshape((-1,) + t.shape[1:]) for v, t in zip(y.split(sizes, 1), xs))
            return pack_like(user(parts, target), parts, "explain's output")
        if isinstance(getattr(user, "model", None), nn.Module):
            explain.model = as_classifier(user.model, xs).model
    check_images(x)
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    n = check_n_samples(n_samples)
    forms = (form,) if isinstance(form, str) else tuple(form)
    if not forms or any(f not in ("relative", "absolute", "lipschitz") for f in forms):
        raise ValueError(f"form must be 'relative', 'absolute' or 'lipschitz' (or a tuple of them), got {form!r}")
    model = getattr(explain, "model", None)
    xd = x.to(model_device(model)) if isinstance(model, nn.Module) else x
    t = resolve_target(model, xd, target)[0] if isinstance(model, nn.Module) else check_target(target, x.shape[0])
    t = None if t is None else t.to(xd.device)
    p = 2 if norm == "fro" else norm
    phi0 = call_explain(explain, xd, t).detach().flatten(1)
    den = torch.linalg.vector_norm(phi0, ord=p, dim=1, keepdim=True)
    den = torch.where(den == 0, torch.ones_like(den), den)
    z = torch.cat([torch.rand((min(SAMPLE_BLOCK, n - s0),) + x.shape[1:], generator=generator(xd.device, seed, b),
                              device=xd.device, dtype=xd.dtype) for b, s0 in enumerate(range(0, n, SAMPLE_BLOCK))])
    z = z.mul_(2 * radius).sub_(radius)                                                        # n x ...
    dz = torch.linalg.vector_norm(z.flatten(1), dim=1).clamp_min(1e-12)

    def run(a: int, b: int) -> torch.Tensor:
        y = (xd[a:b].unsqueeze(1) + z).reshape((-1,) + x.shape[1:])
        phi = call_explain(explain, y, None if t is None else t[a:b].repeat_interleave(n)).detach()
        dist = torch.linalg.vector_norm(phi.reshape(b - a, n, -1) - phi0[a:b].unsqueeze(1), ord=p, dim=2)
        cols = {"relative": dist / den[a:b], "absolute": dist, "lipschitz": dist / dz}
        return torch.stack([cols[f] for f in forms], -1).max(1).values                       # (b - a) x F

    rows = max(1, chunk_size_for(bytes_per_image(x, 200), device=xd.device) // n)
    out = run_chunked(run, x.shape[0], rows).float().cpu()
    return out[:, 0].contiguous() if isinstance(form, str) else {f: out[:, i].contiguous() for i, f in enumerate(forms)}
