"""The attribution registry (one calling shape for every method) and Grad-CAM/occlusion against captum."""
from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam, Occlusion
from torch import nn

from xai_robust import attribution, grouped, lrp, references, superpixels


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).double().eval()


def _x(n=3):
    return torch.rand(n, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


OPTIONS = {"smoothgrad": dict(n_samples=3), "integrated_gradients": dict(n_steps=4), "grad_cam": dict(layer="2"),
           "occlusion": dict(window=4), "grouped_gradient": "segments", "grouped_smoothgrad": "segments",
           "grouped_integrated_gradients": "segments"}


def test_registry_keys_are_the_functions_own_names():
    names = attribution.methods()
    assert names == sorted(["input_gradient", "gradient_x_input", "smoothgrad", "integrated_gradients", "grad_cam",
                            "occlusion", "lrp_flex", "zennit_heatmap", "captum_lrp", "grouped_gradient",
                            "grouped_smoothgrad", "grouped_integrated_gradients"])
    modules = {"lrp_flex": lrp, "zennit_heatmap": references, "captum_lrp": references}
    for name in names:
        module = modules.get(name, grouped if name.startswith("grouped_") else attribution)
        assert getattr(module, name).__name__ == name


@pytest.mark.parametrize("name", attribution.methods())
def test_explain_is_the_direct_call(name):
    model, x = _model(), _x()
    target = torch.tensor([0, 2, 1])
    options = OPTIONS.get(name, {})
    if options == "segments":
        options = dict(segments=superpixels.segment(x, "squares", n_segments=9))
        if name != "grouped_gradient":
            options.update(n_samples=2) if "smooth" in name else options.update(n_steps=3)
    module = {"lrp_flex": lrp, "zennit_heatmap": references, "captum_lrp": references}.get(
        name, grouped if name.startswith("grouped_") else attribution)
    direct = getattr(module, name)(model, x, target, **options)
    via = attribution.explain(name, model, x, target, **options)
    assert isinstance(via, torch.Tensor)
    torch.testing.assert_close(via, direct)
    assert via.shape == x.shape or (name == "grad_cam" and via.shape == (3, 1, 12, 12))


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match="lrp_flex"):
        attribution.explain("lrp", _model(), _x())


def test_grad_cam_matches_captum():
    model, x = _model(), _x()
    t = model(x).argmax(1)
    ours = attribution.grad_cam(model, x, t, layer="2")
    cam = LayerGradCam(model, model[2]).attribute(x, target=t)
    torch.testing.assert_close(ours, LayerAttribution.interpolate(cam, (12, 12), "bilinear"))
    relu = attribution.grad_cam(model, x, t, layer=model[2], relu=True)
    torch.testing.assert_close(relu, LayerAttribution.interpolate(
        LayerGradCam(model, model[2]).attribute(x, target=t, relu_attributions=True), (12, 12), "bilinear"))
    with pytest.raises(ValueError, match="layer"):
        attribution.grad_cam(model, x, layer="nope")


def test_occlusion_matches_captum():
    model, x = _model(), _x()
    t = model(x).argmax(1)
    base = torch.full((1, 3, 1, 1), 0.5, dtype=torch.float64)
    ours = attribution.occlusion(model, x, t, window=4, stride=2, baseline=base)
    ref = Occlusion(model).attribute(x, target=t, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), baselines=base)
    torch.testing.assert_close(ours, ref)
    with pytest.raises(ValueError, match="window"):
        attribution.occlusion(model, x, window=0)
