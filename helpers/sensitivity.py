"""Max-sensitivity (Yeh et al. 2019, Def. 3.1): ``SENS_MAX(Φ, f, x, r) = max_{‖y - x‖_∞ <= r} ‖Φ(y) - Φ(x)‖``,
estimated with uniform samples of the L∞ ball, the same for every input (common random numbers, drawn by
:func:`helpers.infidelity.generator`); the relative form divides by ``‖Φ(x)‖`` (captum, the authors' code)."""

from __future__ import annotations

import math
from typing import Dict, Union

import torch
from torch import nn

from .batching import bytes_per_image, chunk_size_for
from .infidelity import SAMPLE_BLOCK, Packed, generator, pack, pack_like, resolve_target
from .smoothing import Explain, call_explain
from .validation import check_images, check_n_samples, check_target, model_device

__all__ = ["sensitivity_max"]

FORMS = ("relative", "absolute", "lipschitz")


def sensitivity_max(explain: Explain, x: torch.Tensor, radius: float = 0.02, n_samples: int = 10, seed: int = 0, *,
                    target=None, form: Union[str, tuple] = "relative", norm: Union[str, float] = "fro"
                    ) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
    """``max_j ‖Φ(x + z_j) - Φ(x)‖`` over ``z_j ~ Uniform([-r, r]^d)``, ``j = 1..n_samples``.

    Args:
        explain: ``explain(x, target) -> Tensor like x`` (or ``explain(x)``); with an ``explain.model`` and
            ``target=None`` the target is the predicted class at ``x`` for every perturbed copy.
        x: inputs ``N x ...``, or a tuple of them (``explain(x_tuple, target)`` then returns a tuple like it; the
            ball is over all inputs packed as one ``N x D`` tensor and the norms are over all of them).
        radius: L∞ radius ``r >= 0`` (captum's ``perturb_radius``); at ``r = 0`` the value is the explanation's
            own noise floor (0 for a deterministic explanation).
        form: ``"relative"`` ``‖ΔΦ‖ / ‖Φ(x)‖`` (a zero norm counts as 1), ``"absolute"`` ``‖ΔΦ‖`` or
            ``"lipschitz"`` ``‖ΔΦ‖ / ‖z‖``; a tuple of forms returns a dict ``form -> Tensor N`` from the same samples.
        norm: the norm of ``ΔΦ`` (``"fro"`` = L2, captum's default, or any ``p``).
    Returns: ``N`` sensitivities (float32, CPU).
    """
    if isinstance(x, (tuple, list)):                          # several inputs: explain the packed N x D tensor
        xs, user = tuple(x), explain
        x, unpack = pack(xs)

        def explain(y, target=None):  # noqa: F811 - the user's explain seen on packed inputs
            return pack_like(user(unpack(y), target), unpack(y), "explain's output")
        if isinstance(getattr(user, "model", None), nn.Module):
            explain.model = Packed(user.model, unpack)
    check_images(x)
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    n = check_n_samples(n_samples)
    forms = (form,) if isinstance(form, str) else tuple(form)
    if not forms or any(f not in FORMS for f in forms):
        raise ValueError(f"form must be one of {FORMS} (or a tuple of them), got {form!r}")
    model = getattr(explain, "model", None)
    xd = x.to(model_device(model)) if isinstance(model, nn.Module) else x
    t = check_target(target, x.shape[0])
    if t is None and isinstance(model, nn.Module):
        t = resolve_target(model, xd, None)[0]
    t = None if t is None else t.to(xd.device)
    p = 2 if norm == "fro" else norm
    phi0 = call_explain(explain, xd, t).detach().flatten(1)
    den = torch.linalg.vector_norm(phi0, ord=p, dim=1, keepdim=True)
    den = torch.where(den == 0, torch.ones_like(den), den)
    shape, best = tuple(x.shape[1:]), None
    for b, s0 in enumerate(range(0, n, SAMPLE_BLOCK)):
        s = min(SAMPLE_BLOCK, n - s0)
        z = torch.rand((s,) + shape, generator=generator(xd.device, seed, b), device=xd.device, dtype=xd.dtype)
        z = z.mul_(2 * radius).sub_(radius)                                                    # s x ...
        dz = torch.linalg.vector_norm(z.flatten(1), dim=1).clamp_min(1e-12)
        rows_per = max(1, chunk_size_for(bytes_per_image(x, 200), device=xd.device) // s)
        parts = []
        for a in range(0, x.shape[0], rows_per):
            r = min(x.shape[0], a + rows_per) - a
            y = (xd[a:a + r].unsqueeze(1) + z).reshape((-1,) + shape)
            phi = call_explain(explain, y, None if t is None else t[a:a + r].repeat_interleave(s)).detach()
            dist = torch.linalg.vector_norm(phi.reshape(r, s, -1) - phi0[a:a + r].unsqueeze(1), ord=p, dim=2)
            cols = {"relative": dist / den[a:a + r], "absolute": dist, "lipschitz": dist / dz}
            parts.append(torch.stack([cols[f] for f in forms], -1).max(1).values)             # r x F
        m = torch.cat(parts)
        best = m if best is None else torch.maximum(best, m)
    out = best.float().cpu()
    return out[:, 0].contiguous() if isinstance(form, str) else {f: out[:, i].contiguous() for i, f in enumerate(forms)}
