"""Pretrained weights into a built net: checkpoint files of the usual shapes, a head of another
size, keys that do not fit; torchvision's weights from the real torch hub cache, and offline.
The oracle is the tensors themselves: what was saved is what the net holds."""

import json
from pathlib import Path

import pytest
import torch
from app_runs import compose_config, run_config
from torch import nn

from lrexp.app.models import WeightsUnavailableError, torchvision_net
from lrexp.app.weights import (
    CheckpointError,
    WeightsSource,
    load_checkpoint,
    weights_source,
)
from lrexp.engine.result import RangeTestResult


def tiny(classes=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, classes))


def trained(classes=3):
    torch.manual_seed(1)  # other weights than tiny()'s
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, classes))


def same_tensors(a: nn.Module, b: nn.Module, keys=None) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[key], sb[key]) for key in (keys or sa))


@pytest.mark.parametrize("wrap", ["state_dict", "lightning", "tutorial", "ddp", "module"])
def test_checkpoint_files_of_the_usual_shapes_load_exactly(tmp_path, wrap):
    source = trained()
    state = source.state_dict()
    content = {
        "state_dict": state,
        "lightning": {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3},
        "tutorial": {"model_state_dict": state, "optimizer_state_dict": {}},
        "ddp": {f"module.{k}": v for k, v in state.items()},
        "module": source,  # torch.save(model)
    }[wrap]
    torch.save(content, tmp_path / "ckpt.pt")
    net = tiny()
    assert not same_tensors(net, source)
    # a saved module holds Python objects: unpickling it runs code, so only when trusted
    report = load_checkpoint(net, str(tmp_path / "ckpt.pt"), trusted=wrap == "module")
    assert same_tensors(net, source) and len(report.loaded) == 4 and not report.resized


def test_a_checkpoint_holding_python_objects_loads_only_when_trusted(tmp_path):
    torch.save(trained(), tmp_path / "model.pt")  # the whole module, pickled
    with pytest.raises(CheckpointError, match="Python objects.*checkpoint_trusted=true"):
        load_checkpoint(tiny(), str(tmp_path / "model.pt"))
    net = tiny()
    load_checkpoint(net, str(tmp_path / "model.pt"), trusted=True)
    assert same_tensors(net, trained())


def test_a_head_of_another_size_stays_as_initialized(tmp_path):
    torch.save(trained(classes=100).state_dict(), tmp_path / "ckpt.pt")
    net, fresh = tiny(classes=5), tiny(classes=5)
    report = load_checkpoint(net, str(tmp_path / "ckpt.pt"))
    assert same_tensors(net, trained(), ["0.weight", "0.bias"])  # the backbone: loaded
    assert same_tensors(net, fresh, ["2.weight", "2.bias"])  # the head: as initialized
    assert report.resized == ["2.weight [100, 8] -> [5, 8]", "2.bias [100] -> [5]"]


def test_an_explicit_prefix_is_stripped_and_a_wrong_one_named(tmp_path):
    state = {f"net.backbone.{k}": v for k, v in trained().state_dict().items()}
    torch.save(state, tmp_path / "ckpt.pt")
    net = tiny()
    load_checkpoint(net, str(tmp_path / "ckpt.pt"), prefix="net.backbone")
    assert same_tensors(net, trained())
    with pytest.raises(CheckpointError, match=r"checkpoint_prefix=encoder: no key .* starts"):
        load_checkpoint(tiny(), str(tmp_path / "ckpt.pt"), prefix="encoder")


def test_keys_that_do_not_fit_are_named_unless_loading_is_not_strict(tmp_path):
    state = trained().state_dict()
    state["3.weight"] = torch.zeros(2, 2)  # a layer the net does not have
    del state["0.bias"]
    torch.save(state, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tiny(), str(tmp_path / "ckpt.pt"))
    message = str(caught.value)
    assert "1 keys of the net are not in it (0.bias)" in message
    assert "1 of its keys are not in the net (3.weight)" in message
    assert "checkpoint_strict=false" in message
    net = tiny()
    report = load_checkpoint(net, str(tmp_path / "ckpt.pt"), strict=False)
    assert same_tensors(net, trained(), ["0.weight", "2.weight", "2.bias"])
    assert same_tensors(net, tiny(), ["0.bias"]) and report.missing == ["0.bias"]


def test_a_checkpoint_of_another_architecture_loads_nothing_and_says_so(tmp_path):
    torch.save(nn.Conv2d(3, 4, 3).state_dict(), tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="No tensor of it fits this net"):
        load_checkpoint(tiny(), str(tmp_path / "ckpt.pt"), strict=False)


def test_unreadable_and_missing_files_say_what_to_do(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read by torch.load.*torch.save"):
        load_checkpoint(tiny(), str(tmp_path / "notes.pt"))
    with pytest.raises(CheckpointError, match="there is no file at"):
        load_checkpoint(tiny(), str(tmp_path / "absent.pt"))
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="holds no state dict.*epoch"):
        load_checkpoint(tiny(), str(tmp_path / "meta.pt"))


def test_the_weights_source_says_where_weights_came_from(tmp_path):
    assert weights_source({"_target_": "lrexp.app.models.zoo_net", "name": "mlp"}, None) == \
        WeightsSource()
    assert not WeightsSource().pretrained and str(WeightsSource()) == "none"
    tv = weights_source({"_target_": "lrexp.app.models.torchvision_net", "name": "resnet18",
                         "weights": "DEFAULT"}, None)
    assert str(tv) == "torchvision: resnet18 DEFAULT" and tv.pretrained
    timm = weights_source({"_target_": "lrexp.app.models.timm_net", "name": "vit_tiny",
                           "pretrained": True}, None)
    assert str(timm) == "timm: vit_tiny pretrained"
    mine = weights_source({"_target_": "mymodels.build", "pretrained": True}, None)
    assert mine.kind == "net"
    with_weights = {"_target_": "x", "weights": "DEFAULT"}
    ckpt = weights_source(with_weights, "a.pt")
    assert ckpt.kind == "checkpoint" and ckpt.detail == str(Path("a.pt").resolve())
    assert weights_source(with_weights, None).kind == "net"  # a checkpoint wins over them


@pytest.fixture
def torch_hub(tmp_path, monkeypatch):
    """An empty torch hub cache of the test's own, and no network: downloads fail at once
    (a proxy on a closed local port refuses every connection)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_torchvision_weights_load_from_the_hub_cache_with_a_new_head(torch_hub):
    import torchvision

    torch.manual_seed(3)
    imagenet = torchvision.models.resnet18(num_classes=1000)  # stands in for the real file
    torch_hub.mkdir(parents=True)
    torch.save(imagenet.state_dict(), torch_hub / "resnet18-f37072fd.pth")
    net = torchvision_net("resnet18", num_classes=10, weights="DEFAULT")
    assert torch.equal(net.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(net.layer4[1].bn2.running_var, imagenet.layer4[1].bn2.running_var)
    assert net.fc.out_features == 10  # the head for the data's classes, freshly initialized


def test_torchvision_weights_offline_fail_at_once_naming_the_cache(torch_hub):
    with pytest.raises(WeightsUnavailableError) as caught:
        torchvision_net("resnet18", num_classes=10, weights="IMAGENET1K_V1")
    message = str(caught.value)
    assert str(torch_hub / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "net.weights=null" in message
    with pytest.raises(WeightsUnavailableError, match="has the weights IMAGENET1K_V1"):
        torchvision_net("resnet18", num_classes=10, weights="IMAGENET9K")


def test_a_checkpoint_run_starts_from_the_loaded_weights_and_records_them(tmp_path):
    cfg = compose_config("net=mlp", "net.hidden=[16]", "num_iter=8", out_dir=tmp_path / "run")
    # the checkpoint: an MLP of the run's shape with weights of its own
    from hydra.utils import instantiate

    torch.manual_seed(7)
    source = instantiate(cfg.net)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "mlp.pt")
    # validate=auto: a net loaded from a checkpoint is fine-tuned, and digits has a val split
    fine_tuning = compose_config("net=mlp", "net.hidden=[16]", "num_iter=8", "validate=auto",
                                 out_dir=tmp_path / "auto")
    fine_tuning.checkpoint = str(tmp_path / "mlp.pt")
    assert run_config(fine_tuning) == 0
    assert RangeTestResult.from_csv(tmp_path / "auto" / "curve.csv").loss_kind == "val"
    cfg.checkpoint = str(tmp_path / "mlp.pt")
    assert cfg.validate is False  # the default: the training loss, whose first value has an oracle
    assert run_config(cfg) == 0
    curve = RangeTestResult.from_csv(tmp_path / "run" / "curve.csv")
    # the first recorded loss is the checkpoint net's loss on the run's first batch (seed 0)
    from lrexp.app.data import LoaderSettings, digits, loaders

    train, _ = loaders(digits(), LoaderSettings(batch_size=64, seed=0))
    x, y = next(iter(train))
    with torch.no_grad():
        expected = nn.functional.cross_entropy(source(x), y).item()
    assert curve.losses[0] == pytest.approx(expected, rel=1e-5)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["weights"] == f"checkpoint: {(tmp_path / 'mlp.pt').resolve()}"


def test_timm_weights_offline_fail_at_once_naming_the_cache(torch_hub):
    pytest.importorskip("timm")
    import huggingface_hub

    from lrexp.app.models import timm_net

    if huggingface_hub.try_to_load_from_cache("timm/resnet18.a1_in1k", "model.safetensors"):
        pytest.skip("this machine has the weights cached")
    with pytest.raises(WeightsUnavailableError) as caught:
        timm_net("resnet18", num_classes=10, pretrained=True)
    message = str(caught.value)
    assert huggingface_hub.constants.HF_HUB_CACHE in message and "Connection refused" in message
    assert "net.pretrained=false" in message
