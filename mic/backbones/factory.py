"""One factory over timm, by model name, for every task."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

import timm
from torch import nn

# our small models register themselves in timm's registry on import
from mic.backbones.small import SMALL_MODELS
from mic.core.errors import ConfigError, is_whole
from mic.schema import did_you_mean


def _has_weights(name: str, overlay: dict[str, Any] | None) -> bool:
    if overlay and any(overlay.get(k) for k in ("file", "url", "hf_hub_id", "state_dict")):
        return True
    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except Exception:
        return False
    return cfg is not None and any(getattr(cfg, k, None) for k in ("url", "hf_hub_id", "file"))


#: how to load a local weights file or train without pretrained weights, for mic-train and
#: Python users alike (a local file reaches the backbone through Classifier's keywords)
_LOCAL_FILE = (
    "load them from a local file (a classification model alone, where detectors read the "
    "cache only: on the command line "
    "+model.pretrained_cfg_overlay={file:/path/to/weights.pth}; in Python "
    "Classifier(..., pretrained_cfg_overlay={'file': '/path/to/weights.pth'}))"
)
_NO_WEIGHTS = (
    "train without them (on the command line model.pretrained=false; in Python pretrained=False)"
)
_OFFLINE_ADVICE = (
    f"Without internet, download them once into the timm / Hugging Face cache; or {_LOCAL_FILE}; "
    f"or {_NO_WEIGHTS}."
)
_HUB_FILES = ["model.safetensors", "pytorch_model.bin"]
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a connection to the Hugging Face hub opens (True behind a proxy, which this
    cannot test, and when HF_HUB_OFFLINE is set, which the hub's client honours itself)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return True
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def cached_when_offline(
    repo_id: str, files: Sequence[str | Sequence[str]], what: str, advice: str
) -> list[str] | None:
    """The local files of Hugging Face repo ``repo_id`` when the hub cannot be reached (a
    compute node without internet), so that a model loads them at once instead of retrying
    the hub for up to a minute before it falls back to its cache.

    Args:
        repo_id: ``owner/name``, or ``owner/name@revision``.
        files: the files needed, each a name or a sequence of alternative names (the first
            one in the cache is taken).
        what: the weights, as the error names them (``backbone 'resnet50'``).
        advice: the error's last sentences: what to do instead.

    Returns:
        The cached path of each entry of ``files``; None when the hub is reachable.

    Raises:
        ConfigError: the hub cannot be reached and a file is not in the local cache.
    """
    from huggingface_hub import try_to_load_from_cache

    if _hub_reachable():
        return None
    repo, _, revision = repo_id.partition("@")
    paths = []
    for entry in files:
        names = [entry] if isinstance(entry, str) else list(entry)
        found = (try_to_load_from_cache(repo, n, revision=revision or None) for n in names)
        path = next((f for f in found if isinstance(f, str)), None)
        if path is None:
            raise ConfigError(
                f"could not load the pretrained weights of {what}: the Hugging Face hub cannot "
                f"be reached and {repo} is not in the local Hugging Face cache (no "
                f"{' or '.join(names)}). {advice}"
            )
        paths.append(path)
    return paths


def timm_weights_when_offline(
    name: str, what: str | None = None, advice: str = _OFFLINE_ADVICE
) -> str | None:
    """The local file of timm model ``name``'s Hugging Face weights when the hub cannot be
    reached (``cached_when_offline``), for ``timm.create_model``'s
    ``pretrained_cfg_overlay=dict(file=...)``; None when the weights do not come from the hub,
    timm knows none for ``name`` (timm then says so itself) or the hub is reachable.

    Args:
        name: a timm model name, with an optional ``.tag``.
        what: the weights, as the error names them (default ``backbone '<name>'``).
        advice: the error's last sentences: what to do instead.

    Raises:
        ConfigError: the hub cannot be reached and the weights are not in the local cache.
    """
    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except Exception:  # an unknown tag, a model without weights: timm's own error follows
        return None
    if cfg is None or not cfg.hf_hub_id or cfg.source == "hf-hub":
        return None
    # timm's files on the hub: the one a model names, else safetensors before a pickle
    files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else _HUB_FILES
    found = cached_when_offline(cfg.hf_hub_id, [files], what or f"backbone '{name}'", advice)
    return found[0] if found else None


def check_backbone_name(name: str) -> None:
    """Raise a ConfigError that suggests close names when timm does not know ``name``, or
    the weights tag after its ``.`` (timm refused it, also with ``pretrained`` off)."""
    base, dot, tag = name.partition(".")
    if timm.is_model(base):
        # its tags, of weights or none (seresnet34.untrained)
        tagged = timm.list_models(f"{base}.*", include_tags=True) if dot else []
        if dot and name not in tagged:
            tags = ", ".join(t.partition(".")[2] for t in tagged) or "none"
            raise ConfigError(
                f"backbone '{name}': timm knows no weights tagged '{tag}' for {base} (its "
                f"tags: {tags}); give {base} alone for its default weights"
            )
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
        name: any timm model name (``resnet101``, ``vit_base_patch16_224``, ``convnext_tiny`` ...,
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

    Returns:
        The timm model.

    Raises:
        ConfigError: an unknown name, ``pretrained`` without weights to load (none known, one
            of mic's small models, a missing file, the hub unreachable and nothing cached),
            weights that fail to load or that leave most of its tensors out (another model's
            file, ``refuse_foreign_weights``), a weights file without ``pretrained`` (it would
            not be read), ``features_only`` on a model without that mode, or an ``in_chans``
            that is no whole number >= 1.
    """
    check_backbone_name(name)
    if not is_whole(kwargs.get("in_chans", 3)):  # (0: a layer of no input, met at the data)
        raise ConfigError(
            f"backbone '{name}' takes images of in_chans channels (mic-train: model.in_chans), "
            f"a whole number >= 1 (3 for RGB), got {kwargs['in_chans']!r}"
        )
    overlay = kwargs.get("pretrained_cfg_overlay")
    refuse_unread_file(name, pretrained, overlay)
    if pretrained and name in SMALL_MODELS:  # timm would build them without loading a file
        raise ConfigError(
            f"mic's small backbone '{name}' has no pretrained weights and loads no weights "
            f"file: {_NO_WEIGHTS}; to start from a trained run's weights, use init_from "
            "(docs/training.md)"
        )
    if pretrained and not _has_weights(name, overlay):
        raise ConfigError(
            f"no pretrained weights are known for backbone '{name}': {_NO_WEIGHTS}, or "
            f"{_LOCAL_FILE}."
        )
    if features_only:
        kwargs["features_only"] = True
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
    else:
        kwargs.setdefault("num_classes", 0)
    if pretrained and not (overlay and overlay.get("file")):
        cached = timm_weights_when_offline(name)
        if cached is not None:
            kwargs["pretrained_cfg_overlay"] = {**(overlay or {}), "file": cached}
    try:
        with weight_loads() as loads:
            model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as e:
        file = (overlay or {}).get("file")
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if isinstance(e, TypeError) and unknown:  # (a ViT's img_size given to a ResNet)
            raise ConfigError(
                f"backbone '{name}' takes no argument {unknown[1]} (mic-train: model."
                f"{unknown[1]}; one of another architecture, as a ViT config's img_size, or "
                f"misspelt): leave it out (~model.{unknown[1]}), or give a model config made "
                f"for {name}"
            ) from e
        if pretrained and file:  # the user's own file: no advice on downloading
            raise ConfigError(
                f"could not load the pretrained weights of backbone '{name}' from {file} "
                f"({e.__class__.__name__}: {str(e) or 'no message'}): is it a checkpoint of "
                f"{name}, saved with torch.save(model.state_dict()) or as safetensors?"
            ) from e
        if pretrained:
            raise ConfigError(
                f"could not load the pretrained weights of backbone '{name}' "
                f"({e.__class__.__name__}: {str(e) or 'no message'}). {_OFFLINE_ADVICE}"
            ) from e
        if features_only and ("features_only" in str(e) or "feature_info" in str(e)):
            raise ConfigError(f"backbone '{name}' cannot be used with features_only: {e}") from e
        raise
    if pretrained:
        refuse_foreign_weights(name, loads, kwargs.get("pretrained_cfg_overlay"))
    refuse_partial_patches(name, model)
    return model


def refuse_partial_patches(name: str, model: nn.Module) -> None:
    """Refuse a vision transformer of a fixed ``img_size`` that its patch size does not divide:
    timm's patch embedding (a convolution of the patch's stride) reads the whole patches
    alone and never sees the last rows and columns, without a word.

    Raises:
        ConfigError: naming the sizes, the pixels left unread and the fixes.
    """
    patches = getattr(model, "patch_embed", None)
    size, patch = getattr(patches, "img_size", None), getattr(patches, "patch_size", None)
    if not (size and patch) or getattr(patches, "dynamic_img_pad", False):
        return
    if not getattr(patches, "strict_img_size", False):  # (dynamic: checked per batch)
        return
    left = [s % p for s, p in zip(size, patch)]
    if any(left):
        shown = size[0] if size[0] == size[1] else list(size)
        fits = sorted({patch[0] * (size[0] // patch[0]), patch[0] * (size[0] // patch[0] + 1)})
        raise ConfigError(
            f"backbone '{name}' cuts its images into {patch[0]} x {patch[1]} px patches, but "
            f"its img_size {shown} is no multiple of that: it would read "
            f"{size[0] // patch[0]} x {size[1] // patch[1]} patches and never see the last "
            f"{left[0]} px rows and {left[1]} px columns of every image. Give images (and "
            f"model.img_size, which follows dataset.size in mic's ViT configs) a multiple of "
            f"{patch[0]} px ({' or '.join(str(f) for f in fits if f)}), or "
            "+model.dynamic_img_pad=true (timm pads the border)"
        )


def refuse_unread_file(name: str, pretrained: bool, overlay: dict[str, Any] | None) -> None:
    """Refuse a weights file (``pretrained_cfg_overlay.file``) given with ``pretrained=False``,
    which timm would not read, leaving the backbone at random weights, and one that is no file
    (timm's error named none).

    Raises:
        ConfigError: naming the file and the setting that loads it.
    """
    if pretrained and overlay and overlay.get("file") and not os.path.isfile(overlay["file"]):
        raise ConfigError(
            f"could not load the pretrained weights of backbone '{name}': "
            f"pretrained_cfg_overlay.file {overlay['file']} is not a file"
        )
    if not pretrained and overlay and overlay.get("file"):
        raise ConfigError(
            f"backbone '{name}' is given a weights file (pretrained_cfg_overlay.file="
            f"{overlay['file']}) but pretrained=false, so the file would not be read and the "
            "backbone would start from random weights; set pretrained=true (mic-train: "
            "model.pretrained=true) to load it, or leave out the file"
        )


def refuse_foreign_weights(
    name: str, loads: list[tuple[int, list[str], list[str]]], overlay: dict[str, Any] | None
) -> None:
    """Refuse pretrained weights that left more than 5 % of the model's tensors unloaded:
    timm loads them leniently (without a classifier, it logs what is missing and goes on), so
    another model's file, or a shallower one of the family (resnet18's for resnet34), would
    leave the backbone wholly or partly at random weights without an error.

    Args:
        name: the backbone's name, for the message.
        loads: what ``weight_loads`` recorded.
        overlay: the ``pretrained_cfg_overlay`` (its ``file`` is named).

    Raises:
        ConfigError: a load that left more than 5 % of the model's tensors out, or brought
            more than that many tensors the model does not have.
    """
    source = (overlay or {}).get("file", "its weights")
    for own, missing, unexpected in loads:
        if len(missing) > own / 20:  # 5 %: half a deeper ResNet's blocks, a file cut short
            raise ConfigError(
                f"the pretrained weights of backbone '{name}' ({source}) hold {own - len(missing)}"
                f" of its {own} tensors (none for e.g. {', '.join(missing[:3])}): they are "
                "another model's, so it would train from random weights there; give the "
                f"weights of {name}"
            )
        if len(unexpected) > own / 20:  # a deeper model's file: its first blocks fit
            raise ConfigError(
                f"the pretrained weights of backbone '{name}' ({source}) hold {len(unexpected)} "
                f"tensors it does not have (e.g. {', '.join(unexpected[:3])}): they are another "
                f"model's; give the weights of {name}"
            )


@contextlib.contextmanager
def weight_loads() -> Iterator[list[tuple[int, list[str], list[str]]]]:
    """Inside, every ``load_state_dict`` records (the module's tensor count, the names the
    loaded weights left out, the names they hold that the module has not), for
    ``refuse_foreign_weights``; BatchNorm's ``num_batches_tracked``, which loading never asks
    for, counts on neither side."""
    loads: list[tuple[int, list[str], list[str]]] = []
    original = nn.Module.load_state_dict

    def recorded(self: nn.Module, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, state_dict, *args, **kwargs)
        own = [k for k in self.state_dict() if not k.endswith("num_batches_tracked")]
        extra = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
        loads.append((len(own), list(result.missing_keys), extra))
        return result

    nn.Module.load_state_dict = recorded  # type: ignore[method-assign]
    try:
        yield loads
    finally:
        nn.Module.load_state_dict = original  # type: ignore[method-assign]
