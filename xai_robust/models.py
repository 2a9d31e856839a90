"""Classifiers used in the book, all starting with input normalisation (docs/design.md "Images").

Every model takes pixels in [0, 1]; its first module, ``normalize``, maps them to the network's input, so
explanations live in pixel space. Nonlinearities are ``nn.ReLU`` *modules* (LRP-Flex hooks them; chapter 02).

- ``conv2net``: FCR's Conv-2Net (two conv layers, Hakemi et al., Sec. 5.1).
- ``small_resnet``: a three-stage ResNet for 28–64 px images (``conv1, bn1, relu, layer1..layer3, avgpool, fc``).
- ``resnet18`` / ``resnet50``: torchvision's blocks (shared in-place ReLU and all) with a small-input stem.
"""
from __future__ import annotations

import torch
from torch import nn

from .checks import check_count, check_model_input

__all__ = ["Normalize", "Conv2Net", "SmallResNet", "NormalizedResNet", "build", "last_linear", "embed", "ARCHS",
           "check_input_channels"]

ARCHS = ("conv2net", "small_resnet", "resnet18", "resnet50")


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``; the first module of every model in the package."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"the model expects {self.mean.shape[1]} input channels, got x of shape "
                             f"{tuple(x.shape)}; pass images (N, {self.mean.shape[1]}, H, W)")
        return (x - self.mean) / self.std


def _normalize(in_channels):
    return Normalize([0.5] * in_channels, [0.25] * in_channels)


class Conv2Net(nn.Module):
    """Conv-2Net (FCR, Sec. 5.1): two 3×3 conv + ReLU + max-pool stages, a hidden linear layer, a classifier.

    ``fc`` is the last layer whose single weights the fictitious-class edit touches (chapter 05).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, hidden: int = 128):
        super().__init__()
        self.normalize = _normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.avgpool = nn.AdaptiveAvgPool2d(4)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(2 * width * 16, hidden)
        self.relu3 = nn.ReLU()
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(self.normalize(x))))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(self.flatten(self.avgpool(x))))
        return self.fc(x)


class BasicBlock(nn.Module):
    """ResNet basic block with its own ReLU modules (no reuse) and a 1×1 projection shortcut when needed."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A three-stage ResNet for 28–64 px inputs (``layer1`` at full resolution, then ×½ per stage).

    Parameters
    ----------
    num_classes : int
    in_channels : int
    widths : tuple of int
        Channels of layer1..layer3.
    stem_stride : int
        Stride of ``conv1``; 2 halves the cost for 64 px images.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, widths=(16, 32, 64), stem_stride: int = 1):
        super().__init__()
        self.normalize = _normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.layer1 = BasicBlock(widths[0], widths[0], 1)
        self.layer2 = BasicBlock(widths[0], widths[1], 2)
        self.layer3 = BasicBlock(widths[1], widths[2], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


class NormalizedResNet(nn.Module):
    """A torchvision ResNet with ``normalize`` in front, its modules kept under their usual names.

    torchvision's blocks reuse one in-place ``nn.ReLU`` twice; LRP-Flex handles that without rebuilding.
    """

    def __init__(self, resnet: nn.Module, in_channels: int = 3, small_input: bool = True):
        super().__init__()
        self.normalize = Normalize([0.485, 0.456, 0.406][:in_channels] if in_channels == 3 else [0.5] * in_channels,
                                   [0.229, 0.224, 0.225][:in_channels] if in_channels == 3 else [0.25] * in_channels)
        if small_input:
            resnet.conv1 = nn.Conv2d(in_channels, resnet.conv1.out_channels, 3, 1, 1, bias=False)
            resnet.maxpool = nn.Identity()
        elif in_channels != 3:
            resnet.conv1 = nn.Conv2d(in_channels, resnet.conv1.out_channels, 7, 2, 3, bias=False)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"):
            setattr(self, name, getattr(resnet, name))
        self.flatten = nn.Flatten()

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def build(arch: str, num_classes: int, *, in_channels: int = 3, seed: int | None = None, pretrained=None,
          progress_bar: bool = True, **kwargs) -> nn.Module:
    """Build a classifier by name.

    Parameters
    ----------
    arch : {'conv2net', 'small_resnet', 'resnet18', 'resnet50'}
    num_classes : int
    in_channels : int
        1 for grayscale digits, 3 for colour images.
    seed : int, optional
        Seed for the weight initialisation (of the head only, when ``pretrained`` is given).
    pretrained : {None, 'shapes', 'glyphs', 'imagenet'} or path or dict
        Start from pretrained weights (every tensor but the classifier head; :func:`xai_robust.pretrain.initialize`):
        a synthetic corpus's cached backbone (the ``ci`` world's ImageNet), torchvision's ImageNet weights, or a
        state dict (file or dict). None: random initialisation.
    progress_bar : bool
        Progress bar while a synthetic backbone is pretrained (first use only).
    **kwargs
        Passed to the architecture (e.g. ``width``, ``widths``, ``stem_stride``, ``small_input``).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    check_count(num_classes, "num_classes")
    check_count(in_channels, "in_channels")
    if seed is not None:
        torch.manual_seed(check_count(seed, "seed", minimum=0))
    model_kwargs = dict(kwargs)
    if arch == "conv2net":
        model = Conv2Net(num_classes, in_channels, **kwargs)
    elif arch == "small_resnet":
        model = SmallResNet(num_classes, in_channels, **kwargs)
    elif arch in ("resnet18", "resnet50"):
        import torchvision

        small_input = kwargs.pop("small_input", True)
        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes, **kwargs)
        model = NormalizedResNet(net, in_channels, small_input=small_input)
    else:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    if pretrained is not None and pretrained is not False:
        from .pretrain import initialize

        initialize(model, arch, pretrained, in_channels=in_channels, model_kwargs=model_kwargs,
                   progress_bar=progress_bar)
    return model


def _input_channels(model: nn.Module) -> int | None:
    """The channel count the model's first operation takes, where that is certain: the package's models (their
    ``normalize``), or an ``nn.Sequential`` whose first module is a convolution; None otherwise."""
    m = model
    for _ in range(100):
        if isinstance(m, Normalize):
            return int(m.mean.shape[1])
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return int(m.in_channels)
        if isinstance(m, (Conv2Net, SmallResNet, NormalizedResNet)):
            m = m.normalize
        elif isinstance(m, nn.Sequential) and len(m) and not m._forward_pre_hooks:
            m = m[0]
        else:
            return None
    return None


def check_input_channels(model: nn.Module, x: torch.Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` when a batch's channel count differs from what the model's first layer takes.

    Checked only where the first operation is certain (:func:`_input_channels`), before the forward pass: a
    1-channel batch into an RGB network would otherwise fail inside the first convolution.
    """
    expected = _input_channels(model)
    if expected is not None and x.dim() >= 2 and x.shape[1] != expected:
        raise ValueError(f"{name} has {x.shape[1]} channels (shape {tuple(x.shape)}) but the model takes {expected} "
                         f"input channels; images are (N, C, H, W), pass {expected}-channel images")


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's final ``nn.Linear`` (the classifier whose input is the penultimate embedding)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear layer to take embeddings from")
    return linears[-1]


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate embeddings: the input of :func:`last_linear`, computed without gradients.

    The model's train/eval mode is left as found; BatchNorm is used in eval mode for the call. ``x`` is checked
    first (:func:`xai_robust.checks.check_model_input`): a non-empty, finite float batch of the model's dtype.
    """
    from .attribution import restore_model

    check_model_input(model, x)
    check_input_channels(model, x)
    captured = {}
    handle = last_linear(model).register_forward_pre_hook(lambda m, inp: captured.__setitem__("z", inp[0]))
    try:
        with restore_model(model), torch.no_grad():
            model.eval()
            model(x)
    finally:
        handle.remove()
    if "z" not in captured:
        raise ValueError(f"the model's last nn.Linear ({type(last_linear(model)).__name__} "
                         f"{tuple(last_linear(model).weight.shape)}) did not run in the forward pass, so it has no "
                         "input to return as the embedding; models.embed needs the classifier to be the last "
                         "nn.Linear the model uses")
    return captured["z"].detach()
