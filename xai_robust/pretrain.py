"""Pretrained backbones: the ImageNet analog of the ``ci`` world, and the real ImageNet weights (chapter 01).

The papers' last-layer methods start from an ImageNet-pretrained backbone that ERM then fine-tunes (ExMap §5:
"We train the ERM model using an Imagenet-pretrained Resnet-50"; DFR's and FCR's premise is that ERM's embedding
already holds the core feature). Trained from scratch on a few thousand images, our ``ci`` models become shortcut
detectors instead, and DFR, ExMap and FCR have nothing to reweight. So the ``ci`` world gets its own "ImageNet":
a bias-free synthetic corpus per domain, learned once and cached, that never shows a downstream class or a
downstream shortcut:

- ``"shapes"`` (for spurious scenes): eight shape classes — square, rectangle, star, cross, ring, pentagon,
  hexagon, crescent; no triangle or ellipse — drawn like the scenes' objects on land or water backgrounds that
  are drawn *independently of the class*. The backbone learns to find and describe objects on both
  backgrounds, as ImageNet features find birds on land and on water.
- ``"glyphs"`` (for colored digits): ten digit-free stroke glyphs — ring, disc, square outline, plus, X, L, T,
  triangle outline, "=", arc — drawn in random colours with random pose. The backbone learns stroke shapes
  whatever their colour; it never sees a digit, the digit > 4 label or the red/green shortcut.

:func:`pretrained_backbone` trains (or loads) such a backbone; :func:`initialize` copies pretrained weights into
a freshly built model (everything but the classifier head), from the synthetic corpus, from torchvision's
ImageNet weights (``"imagenet"``) or from a state-dict file. :func:`xai_robust.models.build` calls it when given
``pretrained=``, and the profiles' ERM recipes name the backbone each dataset starts from.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_count, check_finite

__all__ = ["SHAPE_CLASSES", "GLYPH_CLASSES", "CORPORA", "PRETRAIN_RECIPES", "shapes_corpus", "glyphs_corpus",
           "corpus", "pretrained_backbone", "pretrained_model", "initialize", "imagenet_state_dict",
           "PretrainedNotFoundError"]

SHAPE_CLASSES = ["square", "rectangle", "star", "cross", "ring", "pentagon", "hexagon", "crescent"]
GLYPH_CLASSES = ["ring", "disc", "square outline", "plus", "X", "L", "T", "triangle outline", "equals", "arc"]

CORPUS_VERSION = 2  # bump whenever a corpus generator changes (cached corpora and backbones are keyed by it)

#: the default corpus and pretraining recipe per domain (the backbone's seed is fixed, as ImageNet weights are)
PRETRAIN_RECIPES = {
    "shapes": dict(n=8000, size=64, epochs=5, lr=2e-3, batch_size=64, weight_decay=1e-4),
    "glyphs": dict(n=12000, size=28, epochs=8, lr=2e-3, batch_size=64, weight_decay=1e-4),
}


def _grid(n, size, g, *, scale_range, shift, max_angle=math.pi):
    """Object-frame coordinates (u, v) of every pixel for ``n`` random poses (rotation, scale, shift)."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    lo, hi = scale_range
    scale = (lo + (hi - lo) * torch.rand(n, generator=g))[:, None, None]
    cy = ((torch.rand(n, generator=g) * 2 - 1) * shift)[:, None, None]
    cx = ((torch.rand(n, generator=g) * 2 - 1) * shift)[:, None, None]
    rot = ((torch.rand(n, generator=g) * 2 - 1) * max_angle)[:, None, None]
    dy, dx = yy[None] - cy, xx[None] - cx
    c, s = torch.cos(rot), torch.sin(rot)
    return (c * dx + s * dy) / scale, (-s * dx + c * dy) / scale


def _polygon(u, v, k, radius, phase=0.0):
    """Inside of a regular k-gon of circumradius ``radius`` (intersection of k half-planes)."""
    inside = torch.ones_like(u, dtype=torch.bool)
    apothem = radius * math.cos(math.pi / k)
    for i in range(k):
        a = phase + 2 * math.pi * (i + 0.5) / k
        inside &= (u * math.cos(a) + v * math.sin(a)) <= apothem
    return inside


def _shape_masks(label, size, g):
    """Masks (N,1,H,W) of the eight pretraining shapes with random pose, about the scenes' object size."""
    n = len(label)
    u, v = _grid(n, size, g, scale_range=(0.85, 1.25), shift=0.125)
    r = 0.22
    rho, theta = torch.sqrt(u ** 2 + v ** 2), torch.atan2(v, u)
    shapes = [
        (u.abs() <= 0.8 * r) & (v.abs() <= 0.8 * r),                                  # square
        (u.abs() <= 1.05 * r) & (v.abs() <= 0.45 * r),                                # rectangle
        rho <= r * (0.62 + 0.38 * torch.cos(5 * theta)),                              # star (five points)
        ((u.abs() <= r) & (v.abs() <= 0.3 * r)) | ((v.abs() <= r) & (u.abs() <= 0.3 * r)),  # cross
        (rho <= r) & (rho >= 0.6 * r),                                                # ring
        _polygon(u, v, 5, r),                                                         # pentagon
        _polygon(u, v, 6, r),                                                         # hexagon
        (rho <= r) & (torch.sqrt((u - 0.45 * r) ** 2 + v ** 2) > 0.8 * r),            # crescent
    ]
    out = torch.zeros(n, size, size, dtype=torch.bool)
    for k, shape in enumerate(shapes):
        out |= shape & (label == k)[:, None, None]
    return out.float()[:, None]


def shapes_corpus(n: int = 8000, *, size: int = 64, seed: int = 0):
    """The scenes' pretraining corpus: eight shape classes on land or water, background independent of the class.

    Objects are drawn as the spurious scenes draw theirs (random colour and shading); the backgrounds are the
    scenes' own land textures and water ripples, each family with probability ½ whatever the class. No
    triangle, no ellipse, no class–background correlation: chapter 01's "ImageNet".

    Parameters
    ----------
    n : int
        Number of images.
    size : int
        Image side in pixels.
    seed : int
        Seed of the corpus.

    Returns
    -------
    SampleDataset
        Labels = shape class (``SHAPE_CLASSES``); groups = class × background family.
    """
    from .data.base import SampleDataset, cached
    from .data.scenes import BACKGROUND_NAMES, _land, _water

    check_count(n, "n")
    check_count(size, "size")
    check_count(seed, "seed", minimum=0)
    if n < 1 or size < 24:
        raise ValueError(f"shapes_corpus needs n >= 1 and size >= 24, got n={n}, size={size}")
    config = dict(name="shapes_corpus", version=CORPUS_VERSION, n=n, size=size, seed=seed)

    def make():
        g = torch.Generator().manual_seed(10_000 + seed)
        label = torch.randint(0, len(SHAPE_CLASSES), (n,), generator=g)
        background = torch.randint(0, 2, (n,), generator=g)  # independent of the class
        land, water = _land(n, size, g), _water(n, size, g)
        scene = torch.where((background == 0)[:, None, None, None], land, water)
        mask = _shape_masks(label, size, g)
        colour = 0.15 + 0.85 * torch.rand(n, 3, 1, 1, generator=g)
        shading = 0.85 + 0.15 * torch.rand(n, 1, size, size, generator=g)
        images = scene * (1 - mask) + colour * shading * mask
        return {"images": images, "labels": label, "background": background, "masks": mask}

    t = cached("datasets", config, make)
    return SampleDataset(t["images"], t["labels"], t["labels"] * 2 + t["background"], class_names=SHAPE_CLASSES,
                         group_names=[f"{c} on {b}" for c in SHAPE_CLASSES for b in BACKGROUND_NAMES],
                         masks=t["masks"], spurious=t["background"], name="shapes corpus (pretraining)")


def _segment_distance(u, v, a, b):
    """Distance of every (u, v) to the segment from point ``a`` to point ``b``."""
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    t = (((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy)).clamp(0, 1)
    return torch.sqrt((u - ax - t * dx) ** 2 + (v - ay - t * dy) ** 2)


def _glyph_distances(u, v):
    """Distance from each pixel to the stroke skeleton of every glyph (list of 10 tensors; disc: inside → 0)."""
    R = 0.3
    rho = torch.sqrt(u ** 2 + v ** 2)
    seg = lambda a, b: _segment_distance(u, v, a, b)  # noqa: E731
    tri = [(R * math.cos(a), R * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    upper = v <= 0  # the arc: the upper half of a circle, closed by its two end points
    arc = torch.where(upper, (rho - R).abs(), torch.minimum(torch.sqrt((u - R) ** 2 + v ** 2),
                                                             torch.sqrt((u + R) ** 2 + v ** 2)))
    return [
        (rho - R).abs(),                                                         # ring
        (rho - 0.7 * R).clamp(min=0),                                            # disc
        (torch.maximum(u.abs(), v.abs()) - 0.85 * R).abs(),                      # square outline
        torch.minimum(seg((-R, 0), (R, 0)), seg((0, -R), (0, R))),               # plus
        torch.minimum(seg((-R, -R), (R, R)), seg((-R, R), (R, -R))),             # X
        torch.minimum(seg((-0.6 * R, -R), (-0.6 * R, R)), seg((-0.6 * R, R), (0.7 * R, R))),  # L
        torch.minimum(seg((-R, -R), (R, -R)), seg((0, -R), (0, R))),             # T
        torch.minimum(torch.minimum(seg(tri[0], tri[1]), seg(tri[1], tri[2])), seg(tri[2], tri[0])),  # triangle
        torch.minimum(seg((-R, -0.4 * R), (R, -0.4 * R)), seg((-R, 0.4 * R), (R, 0.4 * R))),  # equals
        arc,                                                                     # arc
    ]


def glyphs_corpus(n: int = 6000, *, size: int = 28, seed: int = 0, in_channels: int = 3):
    """The digits' pretraining corpus: ten digit-free stroke glyphs in random colours (chapter 01).

    Each glyph is a stroke of about a digit's width (the digits are upsampled 8×8 scikit-learn digits) with a
    random rotation (±15°), scale (0.7–1.25) and shift (±3.5 px at 28 px), drawn in a uniformly random colour
    on black. No digit, no label of a downstream task, no colour–class correlation.

    Parameters
    ----------
    n : int
        Number of images.
    size : int
        Image side in pixels.
    seed : int
        Seed of the corpus.
    in_channels : {1, 3}
        3: random colours; 1: grayscale strokes of random brightness.

    Returns
    -------
    SampleDataset
        Labels = glyph (``GLYPH_CLASSES``); groups = the glyph.
    """
    from .data.base import SampleDataset, cached

    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    check_count(n, "n")
    check_count(size, "size")
    check_count(seed, "seed", minimum=0)
    if n < 1 or size < 16:
        raise ValueError(f"glyphs_corpus needs n >= 1 and size >= 16, got n={n}, size={size}")
    config = dict(name="glyphs_corpus", version=CORPUS_VERSION, n=n, size=size, seed=seed, in_channels=in_channels)

    def make():
        g = torch.Generator().manual_seed(20_000 + seed)
        label = torch.randint(0, len(GLYPH_CLASSES), (n,), generator=g)
        u, v = _grid(n, size, g, scale_range=(0.7, 1.25), shift=3.5 / size, max_angle=math.radians(15))
        dist = torch.zeros(n, size, size)
        for k, d in enumerate(_glyph_distances(u, v)):
            dist = torch.where((label == k)[:, None, None], d, dist)
        half_width = 0.06 + 0.03 * torch.rand(n, 1, 1, generator=g)  # in image units: about 1.7-2.5 px
        stroke = ((half_width - dist) * size / 2.5 + 0.5).clamp(0, 1)[:, None]  # soft edges, like the digits
        if in_channels == 3:
            colour = torch.rand(n, 3, 1, 1, generator=g)
            colour = colour / colour.amax(1, keepdim=True).clamp(min=1e-6)  # a bright colour of any hue
        else:
            colour = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)
        images = stroke * colour
        return {"images": images, "labels": label, "masks": F.max_pool2d((stroke > 0.1).float(), 3, 1, 1)}

    t = cached("datasets", config, make)
    return SampleDataset(t["images"], t["labels"], t["labels"].clone(), class_names=GLYPH_CLASSES,
                         group_names=list(GLYPH_CLASSES), masks=t["masks"], name="glyphs corpus (pretraining)")


CORPORA = {"shapes": shapes_corpus, "glyphs": glyphs_corpus}


def corpus(domain: str, **overrides):
    """The pretraining corpus of a domain with its default size (``PRETRAIN_RECIPES``), e.g. ``corpus("shapes")``."""
    if domain not in CORPORA:
        raise ValueError(f"unknown pretraining domain {domain!r}; choose one of {sorted(CORPORA)}")
    recipe = PRETRAIN_RECIPES[domain]
    kwargs = {"n": recipe["n"], "size": recipe["size"], **overrides}
    return CORPORA[domain](**kwargs)


def _head_names(model: nn.Module) -> set:
    """State-dict keys of the classifier head (the last ``nn.Linear``), which pretraining never transfers."""
    from .models import last_linear

    head = last_linear(model)
    return {f"{name}.{p}" for name, m in model.named_modules() if m is head for p in ("weight", "bias")}


def pretrained_backbone(arch: str, domain: str, *, in_channels: int = 3, seed: int = 0, model_kwargs=None,
                        progress_bar: bool = True, device=None, with_head: bool = False, **overrides) -> dict:
    """A backbone pretrained on a domain's synthetic corpus, trained once and cached (chapter 01).

    The cache key holds everything that determines the weights: the architecture and its arguments, the
    corpus (domain, size, number of images, seed), the recipe and the package's pretraining version. The
    file is written atomically and verified on load (:func:`xai_robust.cache.save_verified`).

    Parameters
    ----------
    arch : str
        An architecture of :func:`xai_robust.models.build`.
    domain : {'shapes', 'glyphs'}
        The corpus: shapes on scenes' backgrounds, or stroke glyphs.
    in_channels : int
        Input channels of the model (glyphs: 1 or 3; shapes: 3).
    seed : int
        Seed of the corpus, the initial weights and the batch order. It is fixed by default, as ImageNet
        weights are one artifact whatever the downstream seed.
    model_kwargs : dict, optional
        Architecture arguments (e.g. ``{"stem_stride": 2}``).
    progress_bar : bool
    device : torch.device, optional
    with_head : bool
        Keep the corpus classifier's head in the returned state dict (to evaluate it on the corpus).
    **overrides
        Replace entries of ``PRETRAIN_RECIPES[domain]`` (``n``, ``size``, ``epochs``, ``lr``, ...). Under the
        smoke setting (``$XAI_ROBUST_SMOKE``, :func:`xai_robust.profiles.smoke`; ``make colab-smoke``) the corpus
        holds at most ``profiles.SMOKE["n_train"]`` images and training lasts ``SMOKE["epochs"]`` epoch.

    Returns
    -------
    dict
        The state dict of the pretrained network, *without* its classifier head unless ``with_head``.
    """
    from . import cache_dir
    from .cache import config_hash, load_verified, save_verified
    from .models import ARCHS
    from .profiles import SMOKE, smoke

    if arch not in ARCHS:  # before the corpus is drawn and a backbone trained
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    check_count(in_channels, "in_channels")
    check_count(seed, "seed", minimum=0)
    if domain not in CORPORA:
        raise ValueError(f"unknown pretraining domain {domain!r}; choose one of {sorted(CORPORA)}")
    unknown = set(overrides) - set(PRETRAIN_RECIPES[domain])
    if unknown:
        raise TypeError(f"unknown pretraining options {sorted(unknown)}; known: {sorted(PRETRAIN_RECIPES[domain])}")
    if domain == "shapes" and in_channels != 3:
        raise ValueError(f"the shapes corpus is in colour: in_channels must be 3, got {in_channels}")
    recipe = {**PRETRAIN_RECIPES[domain], **overrides}
    if smoke():  # make colab-smoke: a toy backbone (the code path, not the weights, is what it checks)
        recipe.update(n=min(recipe["n"], SMOKE["n_train"]), epochs=SMOKE["epochs"])
    model_kwargs = dict(model_kwargs or {})
    key = config_hash(dict(kind="pretrained_backbone", version=CORPUS_VERSION, head=True, arch=arch, domain=domain,
                           in_channels=in_channels, seed=seed, model=model_kwargs, recipe=recipe))
    path = cache_dir() / "pretrained" / f"{arch}-{domain}-{key}.pt"
    state = load_verified(path)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is the same, cached or not
        if state is None:
            state = _pretrain(arch, domain, in_channels, seed, model_kwargs, recipe, progress_bar, device)
            save_verified(state, path)
        if with_head:
            return state
        head = _head_names(_build_for(arch, domain, in_channels, model_kwargs))
    return {k: v for k, v in state.items() if k not in head}


def _build_for(arch, domain, in_channels, model_kwargs, seed=None):
    from .models import build

    return build(arch, len(SHAPE_CLASSES if domain == "shapes" else GLYPH_CLASSES), in_channels=in_channels,
                 seed=seed, **model_kwargs)


def _pretrain(arch, domain, in_channels, seed, model_kwargs, recipe, progress_bar, device):
    from .train import fit

    extra = {"in_channels": in_channels} if domain == "glyphs" else {}
    data = CORPORA[domain](n=recipe["n"], size=recipe["size"], seed=seed, **extra)
    model = _build_for(arch, domain, in_channels, model_kwargs, seed=seed)
    fit(model, data, epochs=recipe["epochs"], lr=recipe["lr"], batch_size=recipe["batch_size"],
        weight_decay=recipe["weight_decay"], seed=seed, cache=False, progress_bar=progress_bar, device=device,
        desc=f"pretraining {arch} on {domain}")
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def pretrained_model(arch: str, domain: str, *, in_channels: int = 3, model_kwargs=None, **kwargs) -> nn.Module:
    """The pretrained corpus classifier itself, head included, in eval mode (to show what the backbone learned).

    Takes the arguments of :func:`pretrained_backbone`.
    """
    model_kwargs = dict(model_kwargs or {})
    model = _build_for(arch, domain, in_channels, model_kwargs)
    model.load_state_dict(pretrained_backbone(arch, domain, in_channels=in_channels, model_kwargs=model_kwargs,
                                              with_head=True, **kwargs))
    return model.eval()


_IMAGENET_WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights"}


def imagenet_state_dict(arch: str, *, progress: bool = True) -> dict:
    """torchvision's ImageNet weights for ResNet-18/50 (``IMAGENET1K_V1``), downloaded on first use.

    Offline, raises a ``RuntimeError`` that names the weights file and the folder to put it in (torch hub's
    ``checkpoints`` folder), or suggests ``pretrained=<path to a state dict>``.
    """
    if arch not in _IMAGENET_WEIGHTS:
        raise ValueError(f"ImageNet weights exist for {sorted(_IMAGENET_WEIGHTS)}, not {arch!r}; use "
                         f"pretrained='shapes'/'glyphs' or a state-dict path")
    import torchvision

    weights = getattr(torchvision.models, _IMAGENET_WEIGHTS[arch]).IMAGENET1K_V1
    filename = weights.url.rsplit("/", 1)[-1]
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash a RuntimeError
        raise RuntimeError(
            f"could not load torchvision's ImageNet weights for {arch} ({exc}). Without internet, download "
            f"{weights.url} elsewhere and put it at {folder / filename}, or pass pretrained=<path to a state dict>"
        ) from exc


class PretrainedNotFoundError(FileNotFoundError, ValueError):
    """``pretrained=`` names neither a known source nor an existing file (a ``ValueError`` for the bad argument,
    and a ``FileNotFoundError`` for the missing file)."""


def _resolve(pretrained, arch, in_channels, model_kwargs, progress_bar):
    if isinstance(pretrained, (str, Path)) and str(pretrained) in CORPORA:
        return pretrained_backbone(arch, str(pretrained), in_channels=in_channels, model_kwargs=model_kwargs,
                                   progress_bar=progress_bar), f"the {pretrained} corpus"
    if isinstance(pretrained, str) and pretrained == "imagenet":
        return imagenet_state_dict(arch, progress=progress_bar), "ImageNet"
    if isinstance(pretrained, dict):
        return pretrained, "the given state dict"
    if isinstance(pretrained, (str, Path)):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PretrainedNotFoundError(f"pretrained={str(pretrained)!r} is neither 'imagenet', one of "
                                          f"{sorted(CORPORA)}, nor an existing state-dict file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
        return state, str(path)
    raise TypeError(f"pretrained must be None, 'imagenet', one of {sorted(CORPORA)}, a path or a state dict; "
                    f"got {type(pretrained).__name__}")


def initialize(model: nn.Module, arch: str, pretrained, *, in_channels: int = 3, model_kwargs=None,
               progress_bar: bool = True) -> nn.Module:
    """Copy pretrained weights into ``model`` — every tensor whose name and shape match, never the head.

    Parameters
    ----------
    model : nn.Module
        A model built by :func:`xai_robust.models.build` (its head keeps its fresh initialisation).
    arch : str
        Its architecture name (selects the backbone to train or the ImageNet weights).
    pretrained : {'shapes', 'glyphs', 'imagenet'} or path or dict
        The synthetic corpus to pretrain on (cached), torchvision's ImageNet weights, or a state dict (a file
        saved with ``torch.save`` or the dict itself). torchvision's names (``conv1.weight``, ``layer1...``) match
        :class:`~xai_robust.models.NormalizedResNet`'s; a state dict with a ``model.`` prefix is not renamed.
    in_channels, model_kwargs : as given to ``build`` (they key the synthetic backbone).
    progress_bar : bool

    Returns
    -------
    nn.Module
        ``model``, modified in place. Raises ``ValueError`` when no backbone tensor matches (a state dict of
        another architecture), naming a few of the keys on both sides.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    state, source = _resolve(pretrained, arch, in_channels, model_kwargs, progress_bar)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"pretrained must map names to tensors (a state dict); {source} holds "
                        f"{type(state[bad[0]]).__name__} under {bad[0]!r}")
    own = model.state_dict()
    head = _head_names(model)
    matched = {k: v for k, v in state.items()
               if k in own and k not in head and tuple(v.shape) == tuple(own[k].shape)}
    backbone = [k for k in own if k not in head and not k.startswith("normalize.")]
    if not any(k in matched for k in backbone):
        raise ValueError(f"no tensor of {source} fits this {arch}: it has e.g. {sorted(state)[:4]}, the model "
                         f"expects e.g. {backbone[:4]}")
    for k, v in matched.items():  # before anything is copied: the model is left as found when this raises
        check_finite(v, f"pretrained[{k!r}] ({source})")
    with torch.no_grad():
        for k, v in matched.items():
            own[k].copy_(v.to(own[k].dtype))
    return model
