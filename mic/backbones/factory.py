"""One factory over timm, by model name, for every task."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import timm
from torch import nn

# our small models register themselves in timm's registry on import
from mic.backbones import small as _small  # noqa: F401
from mic.core.errors import ConfigError


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` Did you mean: a, b?`` with the known names closest to ``name`` (empty if none)."""
    close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _has_weights(name: str, overlay: dict[str, Any] | None) -> bool:
    if overlay and any(overlay.get(k) for k in ("file", "url", "hf_hub_id", "state_dict")):
        return True
    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except Exception:
        return False
    return cfg is not None and any(getattr(cfg, k, None) for k in ("url", "hf_hub_id", "file"))


def check_backbone_name(name: str) -> None:
    """Raise a ConfigError that suggests close names when timm does not know ``name``."""
    if timm.is_model(name.split(".")[0]):
        return
    raise ConfigError(
        f"unknown backbone '{name}': timm has no model of that name."
        f"{did_you_mean(name, timm.list_models())} "
        "List the names with timm.list_models('pattern*')."
    )


def create_backbone(
    name: str,
    pretrained: bool = False,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Create a timm backbone by name.

    Args:
        name: any timm model name (``resnet101``, ``vit_base_patch16_224``, ``mit_b5`` ...,
            with an optional ``.tag`` selecting pretrained weights), or one of mic's small
            models (``small_cnn``, ``tiny_cnn``).
        pretrained: load the pretrained weights the usual timm way (Hugging Face hub or the
            timm cache; ``pretrained_cfg_overlay=dict(file=...)`` for a local file). Fails with
            a clear message when they cannot be loaded.
        features_only: return a feature-pyramid extractor (a list of feature maps, with
            ``feature_info.channels()`` and ``feature_info.reduction()``) for dense tasks.
        out_indices: which pyramid levels ``features_only`` returns.
        **kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``img_size``, ...).

    Without ``features_only`` the model has no classifier (``num_classes=0``): its forward
    gives pooled features of size ``model.num_features``.
    """
    check_backbone_name(name)
    overlay = kwargs.get("pretrained_cfg_overlay")
    if pretrained and not _has_weights(name, overlay):
        raise ConfigError(
            f"no pretrained weights are known for backbone '{name}'; use pretrained=false, or "
            "pass pretrained_cfg_overlay={file: /path/to/weights.pth}"
        )
    if features_only:
        kwargs["features_only"] = True
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
    else:
        kwargs.setdefault("num_classes", 0)
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as e:
        if pretrained:
            raise ConfigError(
                f"could not load the pretrained weights of backbone '{name}' "
                f"({e.__class__.__name__}: {e or 'file not found'}). Without internet, "
                "download them once into the "
                "timm / Hugging Face cache (then set HF_HUB_OFFLINE=1), or pass "
                "pretrained_cfg_overlay={file: /path/to/weights.pth}; or use pretrained=false."
            ) from e
        if features_only and ("features_only" in str(e) or "feature_info" in str(e)):
            raise ConfigError(f"backbone '{name}' cannot be used with features_only: {e}") from e
        raise
