"""helpers.batching: chunked equals unchunked, OOM back-off (simulated), budgets, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import batching as B


@given(total=st.integers(1, 200), chunk=st.integers(1, 64))
@settings(max_examples=40, deadline=None)
def test_run_chunked_equals_unchunked(total, chunk):
    data = torch.arange(total * 3, dtype=torch.float32).view(total, 3)
    out = B.run_chunked(lambda a, b: data[a:b] * 2, total, chunk)
    assert torch.equal(out, data * 2)


def test_oom_backoff_halves_and_retries():
    """A chunk larger than 8 rows 'runs out of memory': the runner halves until it fits and the result is exact."""
    calls, halvings = [], []
    data = torch.randn(50, 4)

    def fn(a, b):
        calls.append(b - a)
        if b - a > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return data[a:b] + 1

    out = B.run_chunked(fn, 50, 64, on_oom=halvings.append)
    assert torch.equal(out, data + 1)
    assert halvings == [32, 16, 8]
    assert max(calls[3:]) <= 8


def test_oom_backoff_recognises_runtime_error_message():
    assert B.is_oom_error(RuntimeError("CUDA error: out of memory"))
    assert not B.is_oom_error(RuntimeError("shape mismatch"))
    assert not B.is_oom_error(ValueError("out of memory"))


def test_oom_at_min_chunk_is_reraised():
    def fn(a, b):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        B.run_chunked(fn, 10, 4, min_chunk=2)


def test_other_errors_are_not_swallowed():
    def fn(a, b):
        raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):
        B.run_chunked(fn, 10, 4)


def test_chunk_size_for_budget(monkeypatch):
    assert B.chunk_size_for(1000, budget=10_000) == 10
    assert B.chunk_size_for(10**9, budget=10) == 1
    monkeypatch.setenv("HELPERS_MEMORY_BUDGET_MB", "1")
    assert B.memory_budget() == 2**20
    with pytest.raises(ValueError, match="bytes_per_item"):
        B.chunk_size_for(0)


def test_forward_chunked_matches_model(cnn, mnist_small):
    x, _ = mnist_small
    with torch.no_grad():
        ref = cnn(x)
    for bs in (1, 7, 32, 100):
        assert torch.allclose(B.forward(cnn, x, batch_size=bs), ref, atol=1e-5)
    assert torch.equal(B.predict(cnn, x, batch_size=5), ref.argmax(1))


def test_forward_rejects_bad_input(cnn, mnist_small):
    x, _ = mnist_small
    with pytest.raises(ValueError, match="NaN"):
        B.forward(cnn, x.clone().fill_(float("nan")))
    with pytest.raises(TypeError, match="floating"):
        B.forward(cnn, (x * 255).to(torch.uint8))
    cnn.train()
    try:
        with pytest.raises(ValueError, match="train mode"):
            B.forward(cnn, x)
    finally:
        cnn.eval()


def test_predict_of_a_single_logit_model_is_class_one_iff_positive():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 1)).eval()
    x = torch.randn(20, 4)
    with torch.no_grad():
        z = net(x).squeeze(1)
    assert torch.equal(B.predict(net, x), (z > 0).long())
    assert torch.equal(B.predict(torch.nn.Sequential(net, torch.nn.Flatten(0)).eval(), x), (z > 0).long())


def test_check_n_samples_and_as_classifier_errors_name_the_argument():
    import numpy as np

    from helpers.validation import as_classifier, check_n_samples

    assert check_n_samples(np.int64(3)) == 3
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        check_n_samples(0, "n_steps")
    with pytest.raises(TypeError, match="n_samples must be an int"):
        check_n_samples(2.5)
    lin = torch.nn.Linear(4, 3).eval()
    with pytest.raises(ValueError, match="same number of rows"):
        as_classifier(lin, (torch.rand(3, 2), torch.rand(2, 2)))
    with pytest.raises(ValueError, match="does not accept inputs of shape"):
        as_classifier(lin, torch.rand(3, 5))
    with pytest.raises(ValueError, match="logits N x C"):
        as_classifier(torch.nn.Unflatten(1, (3, 1)).eval(), torch.rand(2, 3))
    c = as_classifier(lin, torch.rand(3, 4))
    assert c.model is lin and c.n_classes == 3 and not c.packed
