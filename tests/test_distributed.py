"""Distributed range tests: 2 CPU processes (gloo) against one process on the global batch."""

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mlflow_server import free_port
from torch import nn

import lrexp
from lrexp.engine.result import RangeTestResult

WORLD = 2
SHARD = 16


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 3))


def _global_batches(n=40):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(WORLD * SHARD, 10, generator=gen),
             torch.randint(3, (WORLD * SHARD,), generator=gen)) for _ in range(n)]


def _settings():
    return {"min_lr": 1e-4, "max_lr": 100.0, "num_iter": 40, "device": "cpu", "progress": False}


def _rank_main(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        model = nn.parallel.DistributedDataParallel(_model())
        shard = [(x[rank * SHARD:(rank + 1) * SHARD], y[rank * SHARD:(rank + 1) * SHARD])
                 for x, y in _global_batches()]
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        result = lrexp.range_test(model, shard, nn.CrossEntropyLoss(), optimizer, **_settings())
        restored = all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        result.extra["restored"] = restored
        result.to_csv(Path(out) / f"rank{rank}.csv")
    finally:
        dist.destroy_process_group()


def _forked_rank_main(rank, port, out):
    torch.set_num_threads(1)  # OpenMP's pool does not survive a fork; one thread needs none
    _rank_main(rank, port, out)


def test_two_ranks_record_the_curve_of_one_process_on_the_global_batch(tmp_path):
    # forked from this process, the ranks start with torch imported (spawn: seconds of imports)
    ranks = mp.start_processes(_forked_rank_main, args=(free_port(), str(tmp_path)),
                               nprocs=WORLD, join=False, start_method="fork")
    deadline = time.monotonic() + 120
    while not ranks.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("the ranks did not finish within 120 s")
    ranks = [RangeTestResult.from_csv(tmp_path / f"rank{r}.csv") for r in range(WORLD)]
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    single = lrexp.range_test(model, _global_batches(), nn.CrossEntropyLoss(), optimizer,
                              **_settings())
    assert single.stop_reason == "diverged"  # the test covers the stopping decision too
    for result in ranks:
        assert result.extra["restored"]
        assert result.stop_reason == single.stop_reason and len(result) == len(single)
        np.testing.assert_array_equal(result.lrs, single.lrs)
        finite = np.isfinite(single.losses)
        np.testing.assert_allclose(result.losses[finite], single.losses[finite], rtol=1e-4)
    np.testing.assert_array_equal(ranks[0].losses, ranks[1].losses)  # identical on every rank


@pytest.mark.slow
def test_torchrun_cli_writes_one_curve_from_rank_0(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={free_port()}", "-m", "lrexp", "net=mlp", "num_iter=15",
         "tracking=none", "progress=false", "hydra.run.dir=run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    curve = RangeTestResult.from_csv(tmp_path / "run" / "curve.csv")
    assert len(curve) > 5 and curve.extra["world_size"] == 2
    assert (proc.stdout + proc.stderr).count("suggested LR") == 1  # rank 0 reports, once
