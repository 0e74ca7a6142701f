"""The PyTorch engine's data parallelism in one process (a gloo group of one rank): which BatchNorm each mode trains
with. Several ranks are tested for real in tests/training (torchrun, srun, two hosts)."""
from __future__ import annotations

import socket

import pytest

torch = pytest.importorskip("torch", reason="the PyTorch engine needs torch")

from torch import distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

from lumbarseg.engines.torch_distributed import GlobalBatchNorm2d  # noqa: E402
from lumbarseg.engines.torch_engine import TorchEngine  # noqa: E402
from lumbarseg.networks.unet import UNetSpec  # noqa: E402


@pytest.fixture
def one_rank_group():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("mode, kind", [("global", GlobalBatchNorm2d), ("local", nn.BatchNorm2d)])
def test_batch_norm_mode_chooses_the_statistics(one_rank_group, mode, kind):
    """global: every BatchNorm computes the global batch's statistics (all-reduces); local: PyTorch's own, per rank,
    with the running statistics averaged over the ranks at the end of each epoch (unchanged with one rank)."""
    engine = TorchEngine(UNetSpec(depth=2, base_filters=4), seed=0)
    before = {k: v.clone() for k, v in engine.state_dict().items()}
    engine.distribute(mode)
    norms = [m for m in engine.net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 12 and all(type(m) is kind for m in norms)
    assert engine.local_batch_norm == (mode == "local")
    engine.end_epoch()
    after = engine.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the mean over one rank is itself
