"""Spurious scenes: a procedural Waterbirds analog (and an UrbanCars-style second shortcut).

An object of one of two classes (a *triangle* or an *ellipse*, random colour, size and rotation) is drawn on a
background of one of two families: *land* (grass, gravel and brick textures bundled with scikit-image) or *water*
(procedural ripples); both families are tinted from one shared palette, so they differ in texture, not colour. In
training the background agrees with the class (triangle ↔ land, ellipse ↔ water) with probability 0.95, as in
Waterbirds (Sagawa et al., 2020); in val/test the background is balanced within each class. Masks mark the object.
An optional co-occurring object (a small plus or ring in a corner) is a second shortcut with its own correlation,
as in UrbanCars (ExMap Sec. 5.3, Table 3).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..checks import check_count, check_number
from .base import SampleDataset, _check_flag, _check_n, cached

__all__ = ["spurious_scenes", "CLASS_NAMES", "BACKGROUND_NAMES", "COOCCUR_NAMES"]

CLASS_NAMES = ["triangle", "ellipse"]
BACKGROUND_NAMES = ["land", "water"]
COOCCUR_NAMES = ["plus", "ring"]
# both background families draw their tint from the same palette: they differ in texture, not in colour
_TINTS = torch.tensor([[0.42, 0.62, 0.25], [0.6, 0.47, 0.3], [0.25, 0.45, 0.8], [0.3, 0.55, 0.6]])


def _land_textures():
    from skimage import data

    return [torch.tensor(f(), dtype=torch.float32) / 255.0 for f in (data.grass, data.gravel, data.brick)]


def _land(n, size, g):
    textures = _land_textures()
    out = torch.empty(n, 3, size, size)
    which = torch.randint(0, len(textures), (n,), generator=g)
    tint = _TINTS[torch.randint(0, len(_TINTS), (n,), generator=g)] + 0.06 * (torch.rand(n, 3, generator=g) - 0.5)
    for i in range(n):
        tex = textures[int(which[i])]
        crop = int(torch.randint(96, 192, (1,), generator=g))
        y = int(torch.randint(0, tex.shape[0] - crop, (1,), generator=g))
        x = int(torch.randint(0, tex.shape[1] - crop, (1,), generator=g))
        patch = F.interpolate(tex[None, None, y:y + crop, x:x + crop], size=(size, size), mode="bilinear",
                              align_corners=False)[0, 0]
        patch = (patch - patch.mean()) / (patch.std() + 1e-6)
        out[i] = (0.55 + 0.18 * patch)[None] * tint[i][:, None, None] * 1.5
    return out.clamp(0, 1)


def _water(n, size, g):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    field = torch.zeros(n, size, size)
    for _ in range(3):
        freq = 2 + 6 * torch.rand(n, 1, 1, generator=g)
        angle = math.pi * torch.rand(n, 1, 1, generator=g)
        phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
        field += torch.sin(2 * math.pi * freq * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)
    field = field / 3 + 0.25 * torch.randn(n, size, size, generator=g)
    field = F.avg_pool2d(field[:, None], 3, stride=1, padding=1)[:, 0]
    tint = _TINTS[torch.randint(0, len(_TINTS), (n,), generator=g)] + 0.06 * (torch.rand(n, 3, generator=g) - 0.5)
    return ((0.55 + 0.2 * field)[:, None] * tint[:, :, None, None] * 1.5).clamp(0, 1)


def _shapes(label, size, g):
    """Masks (N,1,H,W) of triangles (label 0) and ellipses (label 1) with random pose."""
    n = len(label)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    radius = 0.2 + 0.08 * torch.rand(n, generator=g)
    cy = 0.5 + (torch.rand(n, generator=g) - 0.5) * 0.25
    cx = 0.5 + (torch.rand(n, generator=g) - 0.5) * 0.25
    rot = 2 * math.pi * torch.rand(n, generator=g)
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]
    c, s = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy  # object-frame coordinates
    r = radius[:, None, None]
    # ellipse with aspect ratio 0.55..0.8
    aspect = (0.55 + 0.25 * torch.rand(n, generator=g))[:, None, None]
    ellipse = (u / r) ** 2 + (v / (r * aspect)) ** 2 <= 1.0
    # triangle: intersection of three half-planes whose normals point at the vertices, slightly irregular
    tri = torch.ones(n, size, size, dtype=torch.bool)
    for k in range(3):
        a = 2 * math.pi * k / 3 + (torch.rand(n, generator=g) - 0.5) * 0.3
        na, nb = torch.cos(a)[:, None, None], torch.sin(a)[:, None, None]
        tri &= (u * na + v * nb) >= -0.5 * r * 1.15
    is_tri = (label == 0)[:, None, None]
    return torch.where(is_tri, tri, ellipse).float()[:, None]


def _cooccur(kind, size, g):
    """Masks of the co-occurring object: a plus (0) or a ring (1) in a random corner."""
    n = len(kind)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    corner = torch.randint(0, 4, (n,), generator=g)
    cy = torch.where(corner // 2 == 0, 0.12, 0.88)[:, None, None]
    cx = torch.where(corner % 2 == 0, 0.12, 0.88)[:, None, None]
    dy, dx = yy[None] - cy, xx[None] - cx
    plus = ((dy.abs() < 0.02) & (dx.abs() < 0.08)) | ((dx.abs() < 0.02) & (dy.abs() < 0.08))
    dist = torch.sqrt(dy ** 2 + dx ** 2)
    ring = (dist < 0.08) & (dist > 0.045)
    return torch.where((kind == 0)[:, None, None], plus, ring).float()[:, None]


def _split_generator(seed, split, second_shortcut):
    offset = {"train": 1, "val": 2, "test": 3, "test_fg_only": 3}[split]
    return torch.Generator().manual_seed(seed * 1000 + offset + (500 if second_shortcut else 0))


def spurious_scenes(split: str, *, n: int | None = None, seed: int = 0, size: int = 64,
                    correlation: float | None = None, second_shortcut: bool = False,
                    cooccur_correlation: float | None = None) -> SampleDataset:
    """Spurious scenes, the Waterbirds analog (see the module docstring).

    Parameters
    ----------
    split : {'train', 'val', 'test', 'test_fg_only'}
        'test_fg_only' is the test set with the background removed (ExMap Table 4).
    n : int, optional
        Number of samples (default 2400 train, 800 val, 1200 test).
    seed : int
    size : int
        Image side in pixels.
    correlation : float, optional
        P(background agrees with the class); default 0.95 in train, 0.5 in val/test.
    second_shortcut : bool
        Add the co-occurring object (groups then are class × background × co-object, 8 groups).
    cooccur_correlation : float, optional
        P(co-object agrees with the class); default 0.95 in train, 0.5 in val/test.
    """
    splits = ("train", "val", "test", "test_fg_only")
    if split not in splits:
        raise ValueError(f"spurious_scenes has splits {splits}, not {split!r}")
    check_count(size, "size")
    if size < 24:
        raise ValueError(f"size must be at least 24 pixels, got {size}")
    check_count(seed, "seed", minimum=0)
    second_shortcut = _check_flag(second_shortcut, "second_shortcut")
    train = split == "train"
    n = _check_n(n, {"train": 2400, "val": 800}.get(split, 1200))
    correlation = (0.95 if train else 0.5) if correlation is None else check_number(correlation, "correlation")
    cooccur_correlation = (0.95 if train else 0.5) if cooccur_correlation is None else check_number(
        cooccur_correlation, "cooccur_correlation")
    for name, value in (("correlation", correlation), ("cooccur_correlation", cooccur_correlation)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    base_split = "test" if split == "test_fg_only" else split
    config = dict(name="spurious_scenes", split=base_split, n=n, seed=seed, size=size, correlation=correlation,
                  second_shortcut=second_shortcut, cooccur_correlation=cooccur_correlation)

    def make():
        g = _split_generator(seed, base_split, second_shortcut)
        label = torch.randint(0, 2, (n,), generator=g)
        background = torch.where(torch.rand(n, generator=g) < correlation, label, 1 - label)
        land, water = _land(n, size, g), _water(n, size, g)
        scene = torch.where((background == 0)[:, None, None, None], land, water)
        if second_shortcut:
            cooccur = torch.where(torch.rand(n, generator=g) < cooccur_correlation, label, 1 - label)
            co_mask = _cooccur(cooccur, size, g)
            scene = scene * (1 - co_mask) + 0.95 * co_mask
        else:
            cooccur = torch.full((n,), -1, dtype=torch.long)
        mask = _shapes(label, size, g)
        colour = 0.15 + 0.85 * torch.rand(n, 3, 1, 1, generator=g)
        shading = 0.85 + 0.15 * torch.rand(n, 1, size, size, generator=g)
        obj = colour * shading
        images = scene * (1 - mask) + obj * mask
        return {"images": images, "labels": label, "background": background, "cooccur": cooccur,
                "masks": mask, "objects": obj * mask}

    t = cached("datasets", config, make)
    images = t["objects"] if split == "test_fg_only" else t["images"]
    label, background, cooccur = t["labels"], t["background"], t["cooccur"]
    attributes = {"background": background}
    if second_shortcut:
        groups = label * 4 + background * 2 + cooccur
        names = [f"{c} on {b} with {o}" for c in CLASS_NAMES for b in BACKGROUND_NAMES for o in COOCCUR_NAMES]
        attributes["cooccur"] = cooccur
    else:
        groups = label * 2 + background
        names = [f"{c} on {b}" for c in CLASS_NAMES for b in BACKGROUND_NAMES]
    return SampleDataset(images, label, groups, class_names=CLASS_NAMES, group_names=names, masks=t["masks"],
                         spurious=background, attributes=attributes, name=f"spurious scenes ({split})")
