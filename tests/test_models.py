import pytest
import torch

from lrexp.app import models
from lrexp.app.schema import ConfigError


@pytest.mark.parametrize("name", models.available())
def test_every_registered_net_trains_one_step(name):
    torch.manual_seed(0)
    model = models.zoo_net(name, num_classes=7, in_channels=3, input_size=32)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 6])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", models.available())
def test_every_registered_net_takes_one_channel_images(name):
    # only the stem differs from the 3-channel net trained above: a forward pass shows it
    model = models.zoo_net(name, num_classes=7, in_channels=1, input_size=32)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_the_zoo_holds_the_contracted_nets():
    expected = {"mlp", "simple_cnn", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34",
                "resnet50", "mobilenetv2", "densenet121"}
    assert expected <= set(models.available())


def test_vgg16_is_the_cifar_variant_with_batchnorm():
    vgg16 = models.zoo_net("vgg16", num_classes=100)
    convs = [m for m in vgg16.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in vgg16.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 13 and len(norms) == 13
    assert vgg16(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_mlp_on_vectors_for_the_sine_toy():
    mlp = models.zoo_net("mlp", num_classes=1, in_channels=1, input_size=1, hidden=[8, 8])
    assert mlp(torch.randn(5, 1)).shape == (5, 1)


def test_any_torchvision_model_by_name():
    net = models.torchvision_net("resnet18", num_classes=5, in_channels=3)
    assert net.fc.out_features == 5
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    torch.manual_seed(0)
    gray = models.torchvision_net("resnet18", num_classes=5, in_channels=1)
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    # the stem takes one channel in place: torchvision's names stay (freeze, checkpoints)
    assert gray.conv1.in_channels == 1 and gray.conv1.weight.shape == (64, 1, 7, 7)
    assert list(gray.state_dict()) == list(net.state_dict())
    # a gray image through the adapted stem is what its RGB copy was through the RGB stem
    torch.manual_seed(0)
    rgb = models.torchvision_net("resnet18", num_classes=5, in_channels=3)
    image = torch.randn(1, 1, 8, 8)
    torch.testing.assert_close(gray.conv1(image), rgb.conv1(image.expand(1, 3, 8, 8)))


def test_unknown_names_list_what_exists():
    with pytest.raises(models.UnknownModelError, match="vgg16.*net=tv"):
        models.zoo_net("vgg17", num_classes=10)
    with pytest.raises(models.UnknownModelError, match="torchvision has no"):
        models.torchvision_net("vgg17", num_classes=10)


def test_timm_without_timm_names_the_extra():
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(models.UnknownModelError, match=r"lrexp\[timm\]"):
            models.timm_net("resnet18", num_classes=10)
    else:
        net = models.timm_net("resnet18", num_classes=4, in_channels=1)
        assert net(torch.randn(2, 1, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("name", ["vgg16", "simple_cnn"])
def test_an_option_the_net_does_not_take_is_named_not_ignored(name):
    with pytest.raises(ConfigError, match=rf"net\.hidden=\[8\]: net '{name}' has no option"):
        models.zoo_net(name, num_classes=10, hidden=[8])


def test_densenet_takes_its_growth_rate():
    net = models.zoo_net("densenet121", num_classes=10, growth=12)
    assert net[0].out_channels == 24  # the stem: twice the growth rate


@pytest.mark.parametrize("name,pools", [("vgg11", 5), ("vgg16", 5)])
def test_a_vgg_refuses_images_its_pools_would_shrink_away(name, pools):
    models.zoo_net(name, num_classes=3, input_size=2 ** pools)  # the smallest it takes
    with pytest.raises(ConfigError, match=rf"at least {2 ** pools}x{2 ** pools}.*image_size="):
        models.zoo_net(name, num_classes=3, input_size=2 ** pools - 1)
