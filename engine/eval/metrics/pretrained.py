"""The two pretrained networks of the evaluation suite, loaded offline from local files.

- Inception-v3 for FID and the Inception Score: pytorch-fid's FID Inception (the TensorFlow
  2015-12-05 graph ported to PyTorch). Weights file `pt_inception-2015-12-05-6726825d.pth`
  (pytorch_fid.inception.FID_WEIGHTS_URL), looked up at a path the user gives, else in the torch
  hub cache `torch.hub.get_dir()/checkpoints` (= $TORCH_HOME/hub/checkpoints, by default
  ~/.cache/torch/hub/checkpoints), which is where pytorch-fid itself would download it to.
- LPIPS (the `lpips` package, v0.1): the linear heads ship inside the package
  (lpips/weights/v0.1/<net>.pth); the backbone (AlexNet, VGG16 or SqueezeNet1.1) is torchvision's
  ImageNet checkpoint, looked up in the same hub cache under the name torchvision downloads it to
  (e.g. alexnet-owt-7be5be79.pth).

Nothing here ever downloads: both packages would call torch.hub.load_state_dict_from_url, which
on a machine without network hangs or fails with an obscure URL error. Instead a missing file
raises `WeightsMissing`, whose one-line message names the file, the directory and the URL.

Hash checks (read in torch 2.x / torchvision 0.29): torch.hub.load_state_dict_from_url verifies
the sha256 prefix in the file name only while DOWNLOADING (and only with check_hash=True, which
torchvision passes and pytorch-fid does not); a file already in the cache is loaded without any
check. We load the files ourselves with torch.load(weights_only=True) and check nothing but the
state dict's keys and shapes (strict load_state_dict), the same as both packages do for a
cached file.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path
from unittest import mock
from urllib.parse import urlparse

import lpips
import pytorch_fid.inception as fid_inception
import torch
import torch.nn.functional as F
import torchvision
from torch import nn


class WeightsMissing(Exception):
    """A pretrained weights file is not on disk; the message (one line) says which and where."""


def _url_file_name(url: str) -> str:
    return Path(urlparse(url).path).name


def _hub_checkpoints() -> Path:
    """torch.hub's download directory: set_dir's, else $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    # CPU first: the LPIPS heads, for one, were saved from CUDA tensors.
    return torch.load(path, map_location="cpu", weights_only=True)


def _three_channels(images: torch.Tensor) -> torch.Tensor:
    """(B, 1 or 3, H, W) -> (B, 3, H, W), grey repeated (both networks take RGB)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


# --- Inception (FID, IS) ---------------------------------------------------------------------

FID_WEIGHTS_URL = fid_inception.FID_WEIGHTS_URL
FID_WEIGHTS_FILE = _url_file_name(FID_WEIGHTS_URL)  # pt_inception-2015-12-05-6726825d.pth


def inception_weights_path(path: str | Path | None = None) -> Path:
    """The FID Inception weights file: `path` if given, else the hub cache's
    `torch.hub.get_dir()/checkpoints/pt_inception-2015-12-05-6726825d.pth`.

    Raises WeightsMissing if that file does not exist. Never downloads.
    """
    if path is not None:
        given = Path(path).expanduser()
        if not given.is_file():
            raise WeightsMissing(
                f"Inception weights for FID not found at {given} "
                f"(expected {FID_WEIGHTS_FILE} from {FID_WEIGHTS_URL})")
        return given
    cached = _hub_checkpoints() / FID_WEIGHTS_FILE
    if not cached.is_file():
        raise WeightsMissing(
            f"Inception weights for FID not found: put {FID_WEIGHTS_FILE} (from {FID_WEIGHTS_URL}) "
            f"in {cached.parent} or pass --inception-weights PATH")
    return cached


# pytorch-fid builds its network and loads the weights in one function, fid_inception_v3, which
# fetches them with the module-level load_state_dict_from_url; we swap that name for one that
# hands over our state dict. Building through pytorch-fid's own code (rather than a copy of it)
# keeps the architecture exactly pytorch-fid's. The swap is process-global, hence the lock.
_FID_BUILD_LOCK = threading.Lock()


def _fid_pool3_network(state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """pytorch_fid.inception.InceptionV3([3]) (resize to 299, [0,1] -> [-1,1]), these weights."""
    def hand_over(url, *args, **kwargs):
        if url != FID_WEIGHTS_URL:  # a pytorch-fid version that fetches another file
            raise RuntimeError(f"pytorch-fid asked for {url}, expected {FID_WEIGHTS_URL}")
        return state_dict

    with _FID_BUILD_LOCK, mock.patch.object(fid_inception, "load_state_dict_from_url", hand_over):
        return fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]],
                                         resize_input=True, normalize_input=True)


class FIDInception(nn.Module):
    """Images (B, C, H, W) in [0, 1], C = 1 or 3, any size -> (pool3 (B, 2048), logits (B, 1008)).

    pool3 is exactly pytorch-fid's InceptionV3([3]) output (bilinear resize to 299x299,
    2x - 1, the FID Inception up to the final average pool); the logits are the same network's
    fc layer on it (1008 classes, as in the TF graph), for the Inception Score. Grey images are
    repeated to 3 channels.
    """

    name = "inception-pool3 (pytorch-fid)"

    def __init__(self, state_dict: dict[str, torch.Tensor]):
        super().__init__()
        self.pool3 = _fid_pool3_network(state_dict)  # strict load: checks keys and shapes
        # pytorch-fid's InceptionV3 drops the classifier; rebuild it from the same state dict.
        self.fc = nn.Linear(2048, 1008)
        self.fc.load_state_dict({"weight": state_dict["fc.weight"], "bias": state_dict["fc.bias"]})
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self.pool3(_three_channels(images))[0].flatten(1)
        # torchvision's Inception3 applies dropout before fc: the identity in eval mode.
        return pool, self.fc(pool)


def load_inception(path: str | Path | None = None, device="cpu") -> FIDInception:
    """The FID Inception (eval mode, frozen) on `device`, from `inception_weights_path(path)`.

    Raises WeightsMissing if the file is absent. Never downloads.
    """
    return FIDInception(_load_state_dict(inception_weights_path(path))).to(device)


# --- LPIPS -----------------------------------------------------------------------------------

# The torchvision weights lpips' backbones get: lpips calls tv.alexnet(pretrained=True) etc.,
# which torchvision's legacy interface maps to exactly these enum members.
_LPIPS_BACKBONE_WEIGHTS = {
    "alex": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
    "vgg": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
    "squeeze": torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1,
}

# Smallest square input each backbone's LPIPS layers accept (found by running each one).
# AlexNet: conv 11/4 pad 2, maxpool 3/2, conv 5 pad 2, maxpool 3/2 -> the second maxpool needs a
# 3x3 map, i.e. a 7x7 first conv map, i.e. 31x31 input (the last maxpool is not used by LPIPS).
# VGG16: four 2x2 max pools before relu5_3 -> 16. SqueezeNet1.1 (ceil-mode pools) -> 17.
# Smaller images (e.g. 8x8 digits) are upsampled bilinearly to this size.
LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16, "squeeze": 17}

LPIPS_VERSION = "0.1"


def _check_lpips_net(net: str) -> None:
    if net not in _LPIPS_BACKBONE_WEIGHTS:
        raise ValueError(f"LPIPS net must be one of {sorted(_LPIPS_BACKBONE_WEIGHTS)}, got {net!r}")


def lpips_backbone_file(net: str = "alex") -> Path:
    """Where torchvision looks for (and would download) the LPIPS backbone's ImageNet weights:
    `torch.hub.get_dir()/checkpoints/<file name of the weights' URL>`, e.g.
    alexnet-owt-7be5be79.pth. Whether the file exists is not checked here."""
    _check_lpips_net(net)
    return _hub_checkpoints() / _url_file_name(_LPIPS_BACKBONE_WEIGHTS[net].url)


def lpips_heads_file(net: str = "alex") -> Path:
    """The LPIPS linear heads shipped inside the lpips package: lpips/weights/v0.1/<net>.pth."""
    _check_lpips_net(net)
    return Path(lpips.__file__).parent / "weights" / f"v{LPIPS_VERSION}" / f"{net}.pth"


def _existing(path: Path, what: str, url: str) -> Path:
    if not path.is_file():
        raise WeightsMissing(f"{what} not found: put {path.name} (from {url}) in {path.parent}")
    return path


def _backbone_for_lpips(backbone: dict[str, torch.Tensor], trunk: nn.Module) -> dict:
    """torchvision's `features.<i>.<rest>` keys renamed to lpips' `slice<k>.<i>.<rest>`.

    lpips splits the torchvision `features` Sequential into slices that keep the original
    indices as module names, so the index i identifies the layer. The classifier is dropped.
    """
    out = {}
    for key in trunk.state_dict():
        _, index, rest = key.split(".", 2)
        source = f"features.{index}.{rest}"
        if source not in backbone:
            raise ValueError(f"backbone weights lack {source}: not torchvision's {type(trunk)}")
        out[key] = backbone[source]
    return out


class LPIPSDistance(nn.Module):
    """LPIPS distance (B,) between two image batches (B, C, H, W) in [0, 1], C = 1 or 3.

    Grey is repeated to 3 channels; the batches are mapped to [-1, 1] (lpips' `normalize=True`);
    images smaller than LPIPS_MIN_SIZE[net] on a side are upsampled bilinearly to it.
    """

    def __init__(self, model: lpips.LPIPS, net: str):
        super().__init__()
        self.model = model
        self.net = net
        self.min_size = LPIPS_MIN_SIZE[net]
        self.name = f"lpips-{net} v{LPIPS_VERSION}"

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = _three_channels(images)
        h, w = x.shape[-2:]
        if h < self.min_size or w < self.min_size:
            size = (max(h, self.min_size), max(w, self.min_size))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs one shape: {tuple(x.shape)}, {tuple(y.shape)}")
        return self.model(self._prepare(x), self._prepare(y), normalize=True).flatten()


def _lpips_model(net: str, backbone: dict, heads: dict) -> lpips.LPIPS:
    """lpips.LPIPS built with random weights (pretrained=False, pnet_rand=True: no file read, no
    download), then given the backbone and heads loaded by us."""
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version=LPIPS_VERSION, pretrained=False, pnet_rand=True,
                            verbose=False)
    model.net.load_state_dict(_backbone_for_lpips(backbone, model.net))
    # Like lpips (strict=False): the heads file holds only lin<k> weights; `lins` aliases them.
    result = model.load_state_dict(heads, strict=False)
    unloaded = [k for k in result.missing_keys if k.startswith("lin") and not k.startswith("lins.")]
    if result.unexpected_keys or unloaded:
        raise ValueError(f"LPIPS heads file mismatch: unexpected {result.unexpected_keys}, "
                         f"missing {unloaded}")
    return model


def load_lpips(net: str = "alex", device="cpu") -> LPIPSDistance:
    """LPIPS v0.1 with backbone `net` ('alex', 'vgg', 'squeeze'), eval mode, frozen, on `device`.

    Backbone weights from `lpips_backbone_file(net)` (torch hub cache), heads from
    `lpips_heads_file(net)` (inside the lpips package). Raises WeightsMissing (one line: which
    file, where, from which URL) if either is absent. Never downloads.
    """
    backbone_file = _existing(lpips_backbone_file(net), f"LPIPS {net} backbone weights",
                              _LPIPS_BACKBONE_WEIGHTS[net].url)
    heads_file = lpips_heads_file(net)
    if not heads_file.is_file():
        raise WeightsMissing(f"LPIPS {net} linear heads not found at {heads_file}: they ship with "
                             f"the lpips package, reinstall it")
    model = _lpips_model(net, _load_state_dict(backbone_file), _load_state_dict(heads_file))
    return LPIPSDistance(model, net).requires_grad_(False).eval().to(device)
