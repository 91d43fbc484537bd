"""A user's own project at the app's boundary: their net, dataset and loss from a config folder
of their own (Hydra's search path, as ``--config-dir`` adds it), run by the real runner; every
way such a node can be wrong exits 2 with one paragraph."""

import copy
import json
import textwrap
from functools import cache

import pytest
import torch
from app_runs import run_config, with_values
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from lrexp.app.schema import register
from lrexp.engine.result import RangeTestResult

CONF = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "conf")
MODULE = "lrexp_test_user_project"
register()

USER_CODE = '''
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset


class TinyNet(nn.Module):
    def __init__(self, in_features, num_classes, hidden=16):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.backbone(x))


class LossNet(TinyNet):
    """Computes its own loss, as Hugging Face models do."""

    def forward(self, x, y):
        logits = super().forward(x)
        return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits}


def _tensors(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    return x, (x[:, 0] + x[:, 1] > 0).long()


class DictSamples(Dataset):
    def __init__(self, n):
        self.x, self.y = _tensors(n)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"features": self.x[i], "label": self.y[i]}


def blobs(kind="pair", n=256):
    x, y = _tensors(n)
    train, val = TensorDataset(x[:192], y[:192]), TensorDataset(x[192:], y[192:])
    if kind == "dataset":
        return train
    if kind == "pair":
        return train, val
    if kind == "loaders":
        return DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=64)
    if kind == "dict":
        return DictSamples(n)
    if kind == "tensors":
        return x
    if kind == "empty":
        return TensorDataset(x[:0], y[:0])
    if kind == "number":
        return 42
    if kind == "splits":  # as a Hugging Face DatasetDict keys them
        return {"train": train, "test": val}
    if kind == "train_only":
        return {"train": train}
    raise ValueError(kind)


def not_a_module(size=3):
    return [size]


def per_sample_loss():
    return nn.CrossEntropyLoss(reduction="none")
'''

YAMLS = {
    "net/tiny.yaml": f"_target_: {MODULE}.TinyNet\nin_features: 6\nnum_classes: 2\nhidden: 16\n",
    "net/lossnet.yaml": f"_target_: {MODULE}.LossNet\nin_features: 6\nnum_classes: 2\n",
    "net/nomodule.yaml": f"_target_: {MODULE}.not_a_module\nsize: 3\n",
    "dataset/blobs.yaml": f"_target_: {MODULE}.blobs\nkind: pair\n",
    "loss/per_sample.yaml": f"_target_: {MODULE}.per_sample_loss\n",
}


@pytest.fixture(scope="module")
def user_conf(tmp_path_factory):
    """The user's folder: their module (importable, as PYTHONPATH makes it) and their conf/."""
    folder = tmp_path_factory.mktemp("myproj")
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(USER_CODE))
    for relative, text in YAMLS.items():
        (folder / "conf" / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / "conf" / relative).write_text(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield folder / "conf"


@cache
def _composed(conf: str, overrides: tuple[str, ...]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=[f"hydra.searchpath=[file://{conf}]", *overrides],
                       return_hydra_config=True)


def compose_user(conf, *overrides, out_dir):
    cfg = copy.deepcopy(_composed(str(conf), ("tracking=none", "progress=false", "num_iter=30",
                                              "batch_size=16", *overrides)))
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
    return cfg


def run_user(conf, *overrides, out_dir, values=()):
    cfg = compose_user(conf, *overrides, out_dir=out_dir)
    return run_config(with_values(cfg, *values) if values else cfg)


BASE = ("net=tiny", "dataset=blobs")


@pytest.mark.parametrize("kind", ["dataset", "pair", "loaders", "splits", "train_only"])
def test_a_dataset_may_return_a_dataset_a_pair_loaders_or_splits(user_conf, tmp_path, kind):
    trains_only = kind in ("dataset", "train_only")
    code = run_user(user_conf, *BASE, "validate=false" if trains_only else "validate=true",
                    out_dir=tmp_path, values=[f"dataset.kind={kind}"])
    assert code == 0
    curve = RangeTestResult.from_csv(tmp_path / "curve.csv")
    assert len(curve) >= 10 and curve.extra["net"] == "TinyNet"
    assert curve.extra["dataset"] == "blobs"
    assert curve.loss_kind == ("train" if trains_only else "val")


@pytest.mark.parametrize(("pretrained", "kind", "records"), [
    ("true", "pair", "val"), ("false", "pair", "train"), ("true", "dataset", "train")])
def test_validate_auto_records_the_validation_loss_when_fine_tuning_with_a_val_set(
        user_conf, tmp_path, pretrained, kind, records):
    assert run_user(user_conf, *BASE, f"pretrained={pretrained}", "validate=auto",
                    out_dir=tmp_path, values=[f"dataset.kind={kind}"]) == 0
    assert RangeTestResult.from_csv(tmp_path / "curve.csv").loss_kind == records


def test_by_default_a_fine_tuning_run_records_the_training_loss(user_conf, tmp_path):
    # the default rules were chosen on training-loss curves (scripts/bench_suggest.md)
    assert run_user(user_conf, *BASE, "pretrained=true", out_dir=tmp_path,
                    values=["dataset.kind=pair"]) == 0
    assert RangeTestResult.from_csv(tmp_path / "curve.csv").loss_kind == "train"


@pytest.mark.parametrize(("pretrained", "verify", "verified"), [
    ("true", None, True), ("false", None, False), ("true", "auto", True),
    ("true", "false", False), ("false", "true", True)])
def test_verify_auto_verifies_a_fine_tuning_run_only(user_conf, tmp_path, pretrained, verify,
                                                     verified):
    # verify hit more than the default rule when fine-tuning, not from scratch (bench_suggest.md);
    # None: the default, auto
    verify_setting = () if verify is None else (f"verify={verify}",)
    assert run_user(user_conf, *BASE, f"pretrained={pretrained}", *verify_setting,
                    "verify_steps=5", out_dir=tmp_path) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["verification"] is not None) == verified
    assert (summary["default_method"] == "verified") == verified
    assert (RangeTestResult.from_csv(tmp_path / "curve.csv").verification is not None) == verified


def test_dict_samples_run_with_the_batch_keys_they_name(user_conf, tmp_path, caplog):
    assert run_user(user_conf, *BASE, out_dir=tmp_path / "a", values=["dataset.kind=dict"]) == 2
    assert "batch_keys=[<input>,<target>]" in caplog.text and "'features'" in caplog.text
    assert run_user(user_conf, *BASE, "batch_keys=[features,label]", out_dir=tmp_path / "b",
                    values=["dataset.kind=dict"]) == 0
    assert len(RangeTestResult.from_csv(tmp_path / "b" / "curve.csv")) >= 10


def test_a_model_that_computes_its_own_loss_gives_the_same_curve(user_conf, tmp_path):
    # LossNet is TinyNet with the loss inside: same seed, same weights, same batches
    assert run_user(user_conf, *BASE, out_dir=tmp_path / "outside") == 0
    assert run_user(user_conf, "net=lossnet", "dataset=blobs", "loss=from_model",
                    out_dir=tmp_path / "inside") == 0
    outside = RangeTestResult.from_csv(tmp_path / "outside" / "curve.csv")
    inside = RangeTestResult.from_csv(tmp_path / "inside" / "curve.csv")
    assert len(inside) == len(outside)
    torch.testing.assert_close(torch.tensor(inside.losses), torch.tensor(outside.losses))


@pytest.mark.parametrize("overrides,values,needles", [
    (BASE, ["net._target_=nosuch.module.Net"],
     ["net._target_=nosuch.module.Net", "cannot be imported", "No module named 'nosuch'",
      "PYTHONPATH"]),
    (BASE, ["optimizer._target_=torch.optim.NoSuchOpt"],
     ["optimizer._target_=torch.optim.NoSuchOpt", "cannot be imported"]),
    ((*BASE, "+net.depth=3"), [],
     ["Invalid net", "TinyNet rejected its arguments", "'depth'", "'hidden': 16"]),
    (("net=nomodule", "dataset=blobs"), [], ["returned a list, not a torch.nn.Module"]),
    (BASE, ["dataset.kind=number"], ["returned a int", "Return a torch Dataset"]),
    (BASE, ["dataset.kind=tensors"], ["Tensors, not (input, target) pairs"]),
    (BASE, ["dataset.kind=empty"], ["is empty"]),
    (("net=tiny", "dataset=blobs", "loss=per_sample"), [], ["returned [16], not a scalar"]),
    ((*BASE, "+optimizer.lr=abc"), [],
     ["optimizer.lr=abc", "the range test sets the optimizer's LR"]),
    ((*BASE, "+batch_key=[x,y]"), [], ["no top-level key 'batch_key'"]),
    (BASE, ["optimizer.weight_decay=-1"], ["torch.optim.SGD rejected", "weight_decay"]),
    ((*BASE, "+optimizer.foo=1"), [], ["torch.optim.SGD rejected", "'foo'"]),
    (BASE, ["freeze=[trunk]"], ["freeze=trunk", "backbone, backbone.0, backbone.1, head"]),
    (BASE, ["param_groups=[{prefix: back}]"], ["param_groups[0].prefix=back", "modules: backbone"]),
    (BASE, ["param_groups=[{prefix: backbone, lr_mult: 0}]"], ["param_groups[0].lr_mult=0"]),
    (("net=simple_cnn", "dataset=blobs"), [], ["net.num_classes=None", "data.num_classes"]),
    (BASE, ["checkpoint=/no/such/file.pt"], ["checkpoint=/no/such/file.pt", "no file"]),
    (BASE, ["net.in_features=5"], ["failed on its first step", "mat1 and mat2 shapes"]),
    (BASE, ["dataset.kind=dataset", "validate=true"],
     ["validate=true", "returned no validation set"]),
    ((*BASE, "+loader.batch_size=8"), [], ["loader.batch_size=8", "no such key"]),
    ((*BASE, "+data.classes=3"), [], ["data.classes=3", "no such key"]),
    ((*BASE, "param_groups=[{lr_mult: 0.1}]"), [], ["param_groups[0].prefix=None"]),
    ((*BASE, "param_groups=[{prefix: head, weight_decay: -1}]"), [],
     ["param_groups[0].weight_decay=-1.0", ">= 0"]),
    ((*BASE, "param_groups=[{prefix: head},{prefix: head}]"), [],
     ["param_groups[1].prefix=head", "names the same prefix"]),
    (("net=tiny", "dataset=blobs", "loss=mse"), [], ["failed on its first step", "loss=..."]),
])
def test_a_mistake_at_the_boundary_exits_2_with_one_paragraph(user_conf, tmp_path, caplog,
                                                               overrides, values, needles):
    assert run_user(user_conf, *overrides, out_dir=tmp_path, values=values) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "Traceback" not in caplog.text, caplog.text[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "FAILED"


def test_frozen_modules_stay_as_they_were_and_the_rest_trains(user_conf, tmp_path):
    from lrexp.app import params

    torch.manual_seed(0)
    net = __import__(MODULE).TinyNet(6, 2)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    assert params.freeze(net, ["backbone"]) == 2
    groups = params.param_groups(net, [], lr=0.1)
    assert [len(group["params"]) for group in groups] == [2]  # the head's weight and bias
    optimizer = torch.optim.SGD(groups, lr=0.1)
    x, y = torch.randn(32, 6), torch.randint(2, (32,))
    torch.nn.functional.cross_entropy(net(x), y).backward()
    optimizer.step()
    for name, parameter in net.named_parameters():
        assert torch.equal(parameter, before[name]) == name.startswith("backbone"), name


def test_groups_naming_every_parameter_train_at_their_lr_mult_of_the_scheduled_lr():
    # the scheduled LR is the lr_mult-1 LR even when no parameter is left to the first group
    import lrexp
    from lrexp.app.params import GroupSpec, param_groups

    torch.manual_seed(0)
    net = __import__(MODULE).TinyNet(6, 2)
    groups = param_groups(net, [GroupSpec("backbone", 0.1), GroupSpec("head", 2.0)], lr=1e-7)
    assert [len(g["params"]) for g in groups] == [0, 2, 2]
    optimizer = torch.optim.SGD(groups, lr=1e-7, momentum=0.9)
    x = torch.randn(64, 6)
    batches = [(x[i:i + 16], (x[i:i + 16, 0] > 0).long()) for i in range(0, 64, 16)]
    seen = []
    lrexp.range_test(net, batches, torch.nn.CrossEntropyLoss(), optimizer, num_iter=10,
                     restore=False, progress=False,
                     on_step=lambda step, lr, loss: seen.append(lr))
    scheduled = [group["lr"] for group in optimizer.param_groups]
    assert scheduled == pytest.approx([seen[-1], 0.1 * seen[-1], 2.0 * seen[-1]])


def test_param_groups_by_prefix_take_the_longest_match_and_never_a_sibling():
    from torch import nn

    from lrexp.app.params import GroupSpec, param_groups

    net = nn.ModuleDict({"fc": nn.Linear(2, 2), "fc2": nn.Linear(2, 2),
                         "body": nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))})
    groups = param_groups(net, [GroupSpec("fc", 0.5), GroupSpec("body", 0.1, 0.0),
                                GroupSpec("body.1", 0.2)], lr=1e-3)
    by_lr = {group["lr"]: group for group in groups}
    named = {id(p): name for name, p in net.named_parameters()}
    assert sorted(named[id(p)] for p in by_lr[1e-3]["params"]) == ["fc2.bias", "fc2.weight"]
    assert sorted(named[id(p)] for p in by_lr[5e-4]["params"]) == ["fc.bias", "fc.weight"]
    assert sorted(named[id(p)] for p in by_lr[1e-4]["params"]) == ["body.0.bias", "body.0.weight"]
    assert by_lr[1e-4]["weight_decay"] == 0.0 and "weight_decay" not in by_lr[2e-4]
    assert groups[0]["lr"] == 1e-3  # the parameters no group names come first


def test_a_sweep_childs_name_holds_only_the_settings_its_siblings_differ_in(tmp_path):
    from omegaconf import OmegaConf

    from lrexp.sweep.callbacks import job_swept_settings, write_swept_keys

    config = OmegaConf.create({"hydra": {
        "overrides": {"task": ["net=tiny", "net.depth=1,4", "num_iter=30", "+seed=0,1"]},
        "sweeper": {"params": {"optimizer.weight_decay": "0,1e-4"}}}})
    assert write_swept_keys(config, tmp_path) == ["net.depth", "seed", "optimizer.weight_decay"]
    job = ["net=tiny", "net.depth=4", "num_iter=30", "+seed=1", "optimizer.weight_decay=0"]
    assert job_swept_settings(tmp_path, job) == "net.depth=4 +seed=1 optimizer.weight_decay=0"
    # a sweep dir without the record (started by another tool): every override names the job
    assert job_swept_settings(tmp_path / "elsewhere", job) == " ".join(job)
