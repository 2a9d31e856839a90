"""Metrics: group robustness (``groups``), saliency quality (``saliency``), localisation (``localization``).

Everything is re-exported here, so ``xai_robust.metrics.worst_group_accuracy`` works.
"""
import importlib
import importlib.util

__all__ = []
for _name in ("groups", "saliency", "localization"):
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        _module = importlib.import_module(f"{__name__}.{_name}")
        for _attr in _module.__all__:
            globals()[_attr] = getattr(_module, _attr)
        __all__ += list(_module.__all__)
