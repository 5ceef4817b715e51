"""engine/eval/metrics/pretrained.py: the real loading code, run on weights files made here.

The files hold random weights under the exact names and keys the real downloads have, placed
in a temporary torch hub cache ($TORCH_HOME/hub/checkpoints). Each test compares our loader
with the package's own loader (pytorch-fid's InceptionV3, lpips.LPIPS) reading the same file,
and every download is made to fail, so a test that tried one would error.
"""
import urllib.request

import lpips
import lpips.pretrained_networks as lpips_trunks
import pytest
import pytorch_fid.inception as fid_inception
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from engine.eval.metrics import pretrained
from engine.eval.metrics.pretrained import WeightsMissing


class DownloadAttempted(Exception):
    pass


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Downloads through torch.hub (pytorch-fid's, torchvision's, lpips' path) or urllib raise."""
    def refuse(url, *args, **kwargs):
        raise DownloadAttempted(str(url))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache: TORCH_HOME=tmp_path, so torch.hub.get_dir() is tmp_path/hub."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir would win over $TORCH_HOME
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


# --- Inception -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fid_state_dict():
    """A random FID Inception state dict with the real file's keys, built by pytorch-fid's own
    fid_inception_v3 (its load step is fed the freshly built network's own weights)."""
    built = []
    build = fid_inception._inception_v3
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fid_inception, "_inception_v3",
                   lambda *a, **k: built.append(build(*a, **k)) or built[-1])
        mp.setattr(fid_inception, "load_state_dict_from_url",
                   lambda url, **k: built[-1].state_dict())
        net = fid_inception.fid_inception_v3()
    # PyTorch's default init shrinks activations to ~1e-8 over ~90 layers, which would make any
    # two networks agree; He-normal convs and spread BN statistics keep features of order 1.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0, (2 / module.weight[0].numel()) ** 0.5, generator=g)
            elif isinstance(module, nn.BatchNorm2d):
                module.bias.normal_(0, 0.1, generator=g)
                module.running_mean.normal_(0, 0.1, generator=g)
                module.running_var.uniform_(0.5, 1.5, generator=g)
    return net.state_dict()


def test_inception_pool3_is_pytorch_fid_and_logits_are_its_fc(hub, fid_state_dict):
    torch.save(fid_state_dict, hub / "pt_inception-2015-12-05-6726825d.pth")
    ours = pretrained.load_inception()
    assert pretrained.inception_weights_path() == hub / "pt_inception-2015-12-05-6726825d.pth"
    assert ours.name == "inception-pool3 (pytorch-fid)" and not ours.training

    grey = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pool, logits = ours(grey)
        # pytorch-fid's own path: load_state_dict_from_url finds the cached file (no hash check).
        theirs = fid_inception.InceptionV3([3]).eval()(grey.repeat(1, 3, 1, 1))[0].flatten(1)
        # The whole torchvision-style network, also loaded by pytorch-fid from the cache.
        full = fid_inception.fid_inception_v3().eval()
        full_logits = full(2 * F.interpolate(grey.repeat(1, 3, 1, 1), size=(299, 299),
                                             mode="bilinear", align_corners=False) - 1)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.equal(pool, theirs)  # bit-identical
    assert (pool[0] - pool[1]).abs().max() > 1e-3  # the random weights are not degenerate
    torch.testing.assert_close(logits, full_logits, rtol=1e-5, atol=1e-5)


def test_inception_from_a_user_path(hub, tmp_path, fid_state_dict):
    mine = tmp_path / "elsewhere" / "inception.pth"
    mine.parent.mkdir()
    torch.save(fid_state_dict, mine)
    assert pretrained.inception_weights_path(mine) == mine  # the empty hub cache is not consulted
    net = pretrained.load_inception(str(mine))
    assert torch.equal(net.fc.weight, fid_state_dict["fc.weight"])
    assert torch.equal(net.pool3.blocks[3][2].branch_pool.conv.weight,
                       fid_state_dict["Mixed_7c.branch_pool.conv.weight"])


def test_inception_missing_weights_say_where(hub, tmp_path):
    with pytest.raises(WeightsMissing) as missing:
        pretrained.load_inception()
    message = str(missing.value)
    assert "\n" not in message
    assert "pt_inception-2015-12-05-6726825d.pth" in message and str(hub) in message
    assert fid_inception.FID_WEIGHTS_URL in message

    with pytest.raises(WeightsMissing, match="nowhere.pth"):
        pretrained.inception_weights_path(tmp_path / "nowhere.pth")
    # What the guard spares us: pytorch-fid itself goes for the network.
    with pytest.raises(DownloadAttempted):
        fid_inception.InceptionV3([3])


def test_hub_checks_the_hash_only_when_downloading(hub):
    """torch.hub.load_state_dict_from_url(check_hash=True), as torchvision calls it, loads a cached
    file whose content does not match the hash in its name: the check is on download only."""
    url = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    torch.save({"w": torch.ones(1)}, hub / "alexnet-owt-7be5be79.pth")
    state = torch.hub.load_state_dict_from_url(url, check_hash=True, weights_only=True)
    assert torch.equal(state["w"], torch.ones(1))


# --- LPIPS -----------------------------------------------------------------------------------

def test_lpips_files():
    checkpoints = torch.hub.get_dir() + "/checkpoints"
    for net, name in [("alex", "alexnet-owt-7be5be79.pth"), ("vgg", "vgg16-397923af.pth"),
                      ("squeeze", "squeezenet1_1-b8a52dc0.pth")]:
        assert str(pretrained.lpips_backbone_file(net)) == f"{checkpoints}/{name}"
        assert pretrained.lpips_heads_file(net).is_file()  # shipped inside the lpips package
    with pytest.raises(ValueError):
        pretrained.lpips_backbone_file("resnet")


ARCHITECTURES = {"alex": torchvision.models.alexnet, "squeeze": torchvision.models.squeezenet1_1}


@pytest.mark.filterwarnings("ignore::UserWarning")  # lpips passes tv's deprecated pretrained=
@pytest.mark.parametrize("net", sorted(ARCHITECTURES))
def test_lpips_matches_the_package(hub, net):
    torch.manual_seed(0)
    torch.save(ARCHITECTURES[net](weights=None).state_dict(), pretrained.lpips_backbone_file(net))
    ours = pretrained.load_lpips(net)
    theirs = lpips.LPIPS(net=net, verbose=False)  # lpips' own path (pretrained=True): same file

    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 3, 3, 40, 36, generator=g)
    a, b = torch.rand(2, 3, 1, 8, 8, generator=g)  # grey digits, too small for the backbone
    m = pretrained.LPIPS_MIN_SIZE[net]
    with torch.no_grad():
        d = ours(x, y)
        assert d.shape == (3,) and (d > 0).all()
        assert torch.equal(d, theirs(x, y, normalize=True).flatten())
        assert torch.equal(ours(y, x), d)
        assert torch.equal(ours(x, x), torch.zeros(3))

        def up(t):
            return F.interpolate(t.repeat(1, 3, 1, 1), size=(m, m), mode="bilinear",
                                 align_corners=False)
        assert torch.equal(ours(a, b), theirs(up(a), up(b), normalize=True).flatten())
        with pytest.raises(RuntimeError):
            theirs(a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1), normalize=True)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("net,trunk", [("alex", lpips_trunks.alexnet), ("vgg", lpips_trunks.vgg16),
                                       ("squeeze", lpips_trunks.squeezenet)])
def test_lpips_minimum_input_size(net, trunk):
    layers = trunk(pretrained=False).eval()
    m = pretrained.LPIPS_MIN_SIZE[net]
    with torch.no_grad():
        layers(torch.zeros(1, 3, m, m))
        with pytest.raises(RuntimeError):
            layers(torch.zeros(1, 3, m - 1, m - 1))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lpips_missing_backbone_says_where(hub):
    with pytest.raises(WeightsMissing) as missing:
        pretrained.load_lpips("alex")
    message = str(missing.value)
    assert "\n" not in message
    assert "alexnet-owt-7be5be79.pth" in message and str(hub) in message
    # What the guard spares us: lpips itself goes for the network.
    with pytest.raises(DownloadAttempted):
        lpips.LPIPS(net="alex", verbose=False)


def test_the_evaluations_inception_feature_space_and_auto_choice(hub, fid_state_dict):
    from types import SimpleNamespace

    from engine.eval.metrics import features
    big = SimpleNamespace(name="fake", image_shape=(1, 28, 28))
    assert features.resolve_auto((1, 28, 28), 2049) == "classifier"  # no weights yet
    torch.save(fid_state_dict, hub / "pt_inception-2015-12-05-6726825d.pth")
    assert features.resolve_auto((1, 28, 28), 2049) == "inception"
    assert features.resolve_auto((3, 64, 64), None) == "inception"  # a real set's test split
    assert features.resolve_auto((1, 8, 8), 2049) == "classifier"  # 8 px does not suit it
    assert features.resolve_auto((1, 28, 28), 2048) == "classifier"  # no full-rank covariance
    # raw (no reference split to standardize by: this fake data set has none)
    space = features.choose_features(big, "inception", torch.device("cpu"),
                                     reference_split=None)
    assert space.name == "inception-pool3" and space.dim == 2048 and space.has_inception_logits
    assert space.reports_raw and space.standardization is None  # the papers' FID kept
    feats, logits = features.extract(space, torch.rand(3, 1, 28, 28), torch.device("cpu"))
    assert feats.shape == (3, 2048) and logits.shape == (3, 1008)
