"""SGD (momentum, weight decay, nesterov-free) and AdamW against torch.optim on generated
parameters and gradient sequences: README promises torch's update rules, so several steps must
agree to float32 rounding (issue 15, item 6)."""
import numpy as np
from hypothesis import given, settings, strategies as st

from requires import need
from edgetune.runtime.optim import OptimizerConfig, make_optimizer

SHAPES = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 7)), min_size=1, max_size=3)


def _run_both(cfg, shapes, steps, seed, torch_opt):
    """Apply the same gradient sequence to edgetune's optimizer and to torch's; both parameter sets."""
    torch = need("torch")
    rng = np.random.default_rng(seed)
    params = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    tparams = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
    opt, topt = make_optimizer(cfg), torch_opt(torch, list(tparams.values()))
    # each element's largest magnitude along the way: the size of the terms its rounding came from
    size = {k: np.abs(v) for k, v in params.items()}
    for _ in range(steps):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        opt.step(params, grads)
        for k, p in tparams.items():
            p.grad = torch.from_numpy(grads[k].copy())
        topt.step()
        size = {k: np.maximum(size[k], np.abs(p.detach().numpy())) for k, p in tparams.items()}
    return params, {k: p.detach().numpy() for k, p in tparams.items()}, size


def _assert_bit_close(got, want, size, ulps=4):
    """Within a few float32 ulps of each element's largest magnitude along the run (evaluation
    order is the only allowed difference; a value that cancels to near zero keeps the absolute
    error of the terms it came from)."""
    for k in want:
        tol = ulps * np.spacing(np.maximum(size[k], np.float32(1e-6)))
        np.testing.assert_array_less(np.abs(got[k] - want[k]), tol, err_msg=k)


@settings(max_examples=30, deadline=None)
@given(shapes=SHAPES, steps=st.integers(1, 6), seed=st.integers(0, 2 ** 16),
       lr=st.sampled_from([0.001, 0.01, 0.1]), momentum=st.sampled_from([0.0, 0.5, 0.9]),
       wd=st.sampled_from([None, 0.0, 1e-4, 0.05]))
def test_sgd_matches_torch(shapes, steps, seed, lr, momentum, wd):
    cfg = OptimizerConfig(name="sgd", lr=lr, momentum=momentum, weight_decay=wd)
    got, want, size = _run_both(cfg, shapes, steps, seed, lambda torch, ps: torch.optim.SGD(
        ps, lr=lr, momentum=momentum, weight_decay=wd or 0.0))
    _assert_bit_close(got, want, size)


@settings(max_examples=30, deadline=None)
@given(shapes=SHAPES, steps=st.integers(1, 6), seed=st.integers(0, 2 ** 16),
       lr=st.sampled_from([1e-4, 1e-3, 0.01]), wd=st.sampled_from([None, 0.0, 0.01, 0.1]),
       betas=st.sampled_from([(0.9, 0.999), (0.8, 0.99)]), eps=st.sampled_from([1e-8, 1e-6]))
def test_adamw_matches_torch(shapes, steps, seed, lr, wd, betas, eps):
    cfg = OptimizerConfig(name="adamw", lr=lr, weight_decay=wd, betas=betas, eps=eps)
    got, want, size = _run_both(cfg, shapes, steps, seed, lambda torch, ps: torch.optim.AdamW(
        ps, lr=lr, weight_decay=0.01 if wd is None else wd, betas=betas, eps=eps))
    _assert_bit_close(got, want, size)
