import copy

import pytest
import torch
from helpers import bn_net, classification_batches
from torch import nn

import lrexp

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _assert_state_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_state_equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_state_equal(x, y)
    else:
        assert a == b


def _warmed_up(optimizer_cls, **kw):
    """A BN model and an optimizer that already carry state (momentum buffers, BN stats)."""
    torch.manual_seed(0)
    model = bn_net()
    optimizer = optimizer_cls(model.parameters(), **kw)
    for x, y in classification_batches(n=3, seed=5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("optimizer_cls,kw", [
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (torch.optim.Adam, {"lr": 1e-3}),
])
def test_restores_model_and_optimizer_state_bitwise(optimizer_cls, kw):
    model, optimizer = _warmed_up(optimizer_cls, **kw)
    model.eval()  # a mode the test must put back, too
    model_before = copy.deepcopy(model.state_dict())
    optimizer_before = copy.deepcopy(optimizer.state_dict())
    result = lrexp.range_test(model, classification_batches(), nn.CrossEntropyLoss(), optimizer,
                              num_iter=30, progress=False)
    assert len(result) > 5
    _assert_state_equal(model.state_dict(), model_before)
    _assert_state_equal(optimizer.state_dict(), optimizer_before)
    assert not model.training and not any(m.training for m in model.modules())


def test_restores_the_grad_scaler():
    model, optimizer = _warmed_up(torch.optim.SGD, lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    scaler_before = copy.deepcopy(scaler.state_dict())
    model_before = copy.deepcopy(model.state_dict())
    result = lrexp.range_test(model, classification_batches(), nn.CrossEntropyLoss(), optimizer,
                              num_iter=20, amp="fp16", device="cpu", grad_scaler=scaler,
                              progress=False)
    assert len(result) > 5
    assert scaler.get_scale() == 2.0**10
    _assert_state_equal(scaler.state_dict(), scaler_before)
    _assert_state_equal(model.state_dict(), model_before)


def _train_20_steps(model, optimizer):
    # dropout and a shuffling DataLoader both draw from the global RNGs the test must restore
    data = torch.utils.data.TensorDataset(*map(torch.cat, zip(*classification_batches(n=8))))
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True)
    model.train()
    for step, (x, y) in enumerate(loader):
        if step == 20:
            break
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def test_training_after_a_range_test_is_bitwise_the_same_as_without():
    model, optimizer = _warmed_up(torch.optim.SGD, lr=0.05, momentum=0.9)
    twin_model = copy.deepcopy(model)
    twin_optimizer = torch.optim.SGD(twin_model.parameters(), lr=0.05, momentum=0.9)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))

    torch.manual_seed(42)
    without = _train_20_steps(twin_model, twin_optimizer)
    torch.manual_seed(42)
    lrexp.range_test(model, classification_batches(), nn.CrossEntropyLoss(), optimizer,
                     num_iter=30, progress=False)
    after = _train_20_steps(model, optimizer)
    for a, b in zip(after, without):
        assert torch.equal(a, b)


def test_restore_false_leaves_the_trained_weights():
    model, optimizer = _warmed_up(torch.optim.SGD, lr=0.05, momentum=0.9)
    before = copy.deepcopy(model.state_dict())
    lrexp.range_test(model, classification_batches(), nn.CrossEntropyLoss(), optimizer,
                     num_iter=10, max_lr=1e-2, restore=False, progress=False)
    assert not torch.equal(model.state_dict()["0.weight"], before["0.weight"])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_runs_on_cpu_and_records_a_finite_curve(amp):
    result = lrexp.range_test(bn_net(), classification_batches(), nn.CrossEntropyLoss(),
                              num_iter=10, max_lr=1e-2, amp=amp, device="cpu", progress=False)
    assert len(result) == 10 and result.stop_reason == "completed"


@cuda
@pytest.mark.parametrize("amp", [None, "bf16", "fp16"])
def test_cuda_run_restores_the_model_to_cpu_and_keeps_the_snapshot_off_the_gpu(amp):
    model, optimizer = _warmed_up(torch.optim.SGD, lr=0.05, momentum=0.9)
    model_before = copy.deepcopy(model.state_dict())
    optimizer_before = copy.deepcopy(optimizer.state_dict())
    torch.cuda.reset_peak_memory_stats()
    result = lrexp.range_test(model, classification_batches(), nn.CrossEntropyLoss(), optimizer,
                              num_iter=30, device="cuda", amp=amp, progress=False)
    assert len(result) > 5
    assert all(p.device.type == "cpu" for p in model.parameters())
    _assert_state_equal(model.state_dict(), model_before)
    _assert_state_equal(optimizer.state_dict(), optimizer_before)


class _CountsCalls(nn.Module):
    """A non-persistent buffer that forward replaces, and a scale the model does not own."""

    def __init__(self, scale: nn.Parameter) -> None:
        super().__init__()
        self.linear = nn.Linear(10, 3)
        self.register_buffer("calls", torch.zeros(()), persistent=False)
        self.scale = [scale]  # a list: not registered, so not in parameters() or state_dict()

    def forward(self, x):
        self.calls = self.calls + 1  # a new tensor each call, as running statistics often are
        return self.linear(x) * self.scale[0]


def test_non_persistent_buffers_and_optimizer_only_params_are_restored():
    scale = nn.Parameter(torch.tensor(1.5))
    model = _CountsCalls(scale)
    optimizer = torch.optim.SGD([*model.parameters(), scale], lr=1e-7, momentum=0.9)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    lrexp.range_test(model, classification_batches(), nn.CrossEntropyLoss(), optimizer,
                     num_iter=20, progress=False)
    assert model.calls.item() == 0 and "calls" not in model.state_dict()
    assert scale.item() == 1.5 and scale.grad is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key])
