"""CUDA-graph replay of search iterations gives the eager numbers (runs where a GPU is present)."""

import copy

import pytest
import torch

from raynas.config import resolve
from trials import cuda_graph
from trials.batches import Dataset
from trials.bilevel import Search

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CASES = [("darts", "nb201"), ("darts2", "nb201"), ("pcdarts", "darts"), ("rfdarts", "darts"), ("rfpcdarts", "darts")]


@pytest.fixture(autouse=True)
def _deterministic_kernels():
    """Both runs must pick the same cuDNN kernels, or float rounding differs before any graph is involved."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic = False


def _search(method: str, space: str, **over) -> Search:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    data = Dataset("cifar10", x, y, x[:64], y[:64], 10, (0.5,) * 3, (0.25,) * 3, 4, True)
    cfg = resolve({"method": method, "space": space, "dataset": "cifar10", "device": "cuda", "epochs": 4,
                   "batch_size": 32, "seed": 0, "arch": {"warmup_epochs": 1},
                   "model": {"C": 12 if method == "drnas" else 8, "layers": {"nb201": 1, "darts": 3}[space]},
                   **over})  # DrNAS' partial channels K=6 then 4 both divide C=12
    return Search(cfg, data)


@pytest.mark.parametrize("method,space", CASES)
def test_replayed_iterations_equal_eager_ones(method, space):
    """Same state, same batches: four iterations through a CUDA graph (eager warm-up, capture, replays),
    then the same four eagerly from a copy of the starting state; the weights and alpha agree."""
    s = _search(method, space)
    s.method.on_epoch_start(s, 1)
    start = copy.deepcopy(s.state_dict())
    batches = list(zip(s.w_stream.epoch(s.generator(0)), s.a_stream.epoch(s.generator(1))))[:4]
    rng = torch.cuda.get_rng_state()
    step = cuda_graph.iteration(s, update_arch=True)
    assert isinstance(step, cuda_graph.Graphed)
    for (x, y), (xa, ya) in batches:
        step(x, y, xa, ya)
    assert step.graph is not None and not step.failed, "the iteration was not recorded"
    graphed = {k: v.detach().clone() for k, v in s.net.state_dict().items()}
    s.load_state_dict(start)
    torch.cuda.set_rng_state(rng)
    for (x, y), (xa, ya) in batches:
        s.method.arch_step(s.step_context(), x, y, xa, ya)
        s.weight_step(x, y)
    for k, v in s.net.state_dict().items():
        assert torch.allclose(v.float(), graphed[k].float(), rtol=1e-5, atol=1e-6), (k, (v - graphed[k]).abs().max())


@pytest.mark.parametrize("method,space", CASES + [("drnas", "nb201"), ("drnas", "darts"), ("alphadarts", "nb201")])
def test_epochs_run_through_graphs(method, space):
    """Whole epochs (warm-up epoch, then arch epochs) replay from graphs and yield a valid genotype."""
    s = _search(method, space)
    for _ in range(s.cfg.epochs):
        m = s.run_epoch()
    assert all(torch.isfinite(a).all() for a in s.method.arch_parameters(s.net))
    assert m["genotype"] and m["valid_acc"] is not None
    if s.method.graphable:
        assert isinstance(s.iteration, cuda_graph.Graphed) and s.iteration.graph is not None
