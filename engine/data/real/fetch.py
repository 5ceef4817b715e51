"""Downloading a real data set's files into its data root with torchvision's download, where
the machine has a network: a dead or absent network is a one-line DataNotFound within seconds,
not a hang."""
from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from torchvision import datasets as tvd

from engine.data.real.catalog import one_line
from engine.data.real.files import MNIST_CLASSES, missing, not_found
from engine.data.real.readers import LenientCelebA, LenientCIFAR10

DOWNLOAD_TIMEOUT_S = 60  # per socket operation, so a dead network fails instead of hanging
PROBE_TIMEOUT_S = 5


def _download_url(name: str) -> str | None:
    if name in MNIST_CLASSES:
        return MNIST_CLASSES[name].mirrors[0]
    if name == "cifar10":
        return tvd.CIFAR10.url
    if name == "celeba":
        return "https://drive.google.com/"
    return None  # CelebA-HQ has no official download


def reachable(url: str) -> str | None:
    """None if the url's host takes a TCP connection within PROBE_TIMEOUT_S (or a proxy is
    configured, which urllib will use), else why not (one line)."""
    scheme = urlparse(url).scheme
    if urllib.request.getproxies().get(scheme):
        return None
    host, port = urlparse(url).hostname, urlparse(url).port or (443 if scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
        return None
    except OSError as e:
        return f"cannot reach {host} ({one_line(e)})"


def download(name: str, root: Path) -> None:
    """Download name's files into root with torchvision's download; DataNotFound of one line
    (where they are expected, what is missing, why there is no download) if that fails or
    the network is not reachable."""
    url = _download_url(name)
    if url is None:
        why = "there is no official download"
    else:
        why = reachable(url)
        if why is None:
            old = socket.getdefaulttimeout()
            socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
            try:
                if name in MNIST_CLASSES:
                    MNIST_CLASSES[name](str(root), train=True, download=True)
                elif name == "cifar10":
                    LenientCIFAR10(str(root), train=True, download=True)
                else:
                    LenientCelebA(str(root), split="all", target_type=[], download=True)
                if not missing(name, root):
                    return
                why = "the download did not produce them"
            except Exception as e:  # no network, a dead mirror, gdown missing, a bad MD5 ...
                why = f"downloading them failed ({one_line(e)})"
            finally:
                socket.setdefaulttimeout(old)
        else:
            why = f"no network to download them: {why}"
    raise not_found(name, root, why)
