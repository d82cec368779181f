"""Any segmentation_models_pytorch (smp) architecture as a ``Segmenter``: smp's encoder as the
``encoder``, its decoder and segmentation head as the ``decode_head``."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from mic.core.errors import ConfigError
from mic.schema import did_you_mean
from mic.tasks.common import check_whole
from mic.tasks.segmentation.models.base import (
    Segmenter,
    _weights_error,
    encoder_weights,
    weights_from_cache,
)

#: smp's architectures, by their smp (``smp.create_model``) names.
_ARCHS = (
    "Unet",
    "UnetPlusPlus",
    "MAnet",
    "Linknet",
    "FPN",
    "PSPNet",
    "DeepLabV3",
    "DeepLabV3Plus",
    "PAN",
    "UPerNet",
    "Segformer",
    "DPT",
)


#: smp's arguments that SmpModel sets itself (from ``num_classes``, ``encoder``, ``pretrained``)
_SET_BY_MIC = {"self", "kwargs", "encoder_name", "encoder_weights", "classes"}


def _popped(cls: type) -> list[str]:
    """The keywords an smp architecture takes from its ``**kwargs`` itself (its deprecated
    names, e.g. Unet's ``decoder_use_batchnorm``), read off its ``__init__``'s source."""
    try:
        source = inspect.getsource(cls.__init__)
    except (OSError, TypeError):
        return []
    return re.findall(r"kwargs\.pop\(\s*[\"'](\w+)[\"']", source)


class SmpDecodeHead(nn.Module):
    """An smp model's decoder and segmentation head, as one decode head.

    Args:
        decoder: the smp model's ``decoder`` (kept under the same name).
        segmentation_head: the smp model's ``segmentation_head`` (kept under the same name).
    """

    def __init__(self, decoder: nn.Module, segmentation_head: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.segmentation_head = segmentation_head

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Decode and classify.

        Args:
            features: the smp encoder's feature maps, the input itself first.

        Returns:
            logits (B, num_classes, H, W), at the input's resolution for smp's heads.
        """
        return self.segmentation_head(self.decoder(list(features)))


class SmpModel(Segmenter):
    """Any segmentation_models_pytorch architecture (``Unet``, ``FPN``, ``DeepLabV3Plus``,
    ``Segformer``, ...) with any of its encoders or a timm model as ``tu-<name>``.

    smp builds the whole model; mic keeps its ``encoder`` and wraps its ``decoder`` and
    ``segmentation_head`` into an ``SmpDecodeHead`` (state_dict keys ``encoder.*``,
    ``decode_head.decoder.*``, ``decode_head.segmentation_head.*``; smp's optional
    classification head is dropped).

    Full resolution: smp's segmentation heads upsample to the input, so ``forward`` gives
    logits (B, num_classes, H, W); H and W must be multiples of the encoder's output stride
    (``side_multiple``: 32 by default, 8 for PSPNet), and at least 128 for PAN (a ConfigError
    otherwise). The features are smp's encoder's list, the input itself first.

    Args:
        num_classes: the number of classes (smp's ``classes``).
        arch: the architecture's smp name, case-insensitive (``Unet`` by default).
        encoder: smp's encoder name or ``tu-<timm name>`` (``resnet34``, smp's default).
        pretrained: load the encoder's ImageNet weights (off by default).
        **kwargs: passed to ``segmentation_models_pytorch.create_model`` (e.g.
            ``decoder_channels``, ``encoder_depth``); with a ``tu-`` encoder, those the
            architecture does not name go on to timm's model.

    Raises:
        ConfigError: unknown architecture or encoder name, a keyword that neither the
            architecture nor (a ``tu-`` encoder's) timm takes (smp's own encoders would drop
            it unread), or pretrained weights that cannot be loaded; (in ``forward``) images
            of sides that are not multiples of ``side_multiple``.
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "Unet",
        encoder: str = "resnet34",
        pretrained: bool = False,
        **kwargs: Any,
    ) -> None:
        check_whole("num_classes", num_classes, what="the classes the model predicts")
        import segmentation_models_pytorch as smp

        archs = {a.lower(): a for a in _ARCHS}
        if arch.lower() not in archs:
            raise ConfigError(
                f"unknown smp architecture '{arch}'; choose one of {sorted(archs.values())}"
            )
        cls = getattr(smp, archs[arch.lower()])
        named = [*inspect.signature(cls.__init__).parameters, *_popped(cls)]
        unread = [k for k in kwargs if k not in named and k != "pretrained_cfg_overlay"]
        if unread and not encoder.startswith("tu-"):  # timm refuses what it does not take
            settings = sorted(k for k in named if k not in _SET_BY_MIC)
            hint = did_you_mean(unread[0], settings)
            raise ConfigError(
                f"'{unread[0]}' is no setting of smp's {archs[arch.lower()]} with smp's own "
                f"encoder '{encoder}', which would drop it unread.{hint}"
                f" Its settings: {', '.join(settings)} (in mic-train model.<setting>, or "
                "model.segmenter.<setting> inside HRDA); a tu-<timm name> encoder also takes "
                "timm's"
            )
        from mic.backbones.factory import refuse_foreign_weights, refuse_unread_file, weight_loads

        overlay = kwargs.get("pretrained_cfg_overlay")
        file = (overlay or {}).get("file")
        if file and not encoder.startswith("tu-"):  # smp's own encoders read no such file
            raise ConfigError(
                f"a weights file (pretrained_cfg_overlay.file={file}) is read by timm encoders "
                f"(tu-<name>), not by smp's own encoder '{encoder}', which would fetch its "
                f"ImageNet weights instead: use encoder tu-{encoder} where timm has that model"
            )
        refuse_unread_file(encoder, pretrained, overlay)
        weights = encoder_weights(encoder, pretrained)
        build, building = weights_from_cache(encoder, pretrained, kwargs)
        try:
            with building, weight_loads() as loads:
                model = smp.create_model(
                    archs[arch.lower()],
                    encoder_name=encoder,
                    encoder_weights=weights,
                    classes=num_classes,
                    **build,
                )
        except Exception as e:
            if pretrained:
                raise _weights_error(encoder, e) from e
            raise
        if pretrained:
            refuse_foreign_weights(encoder, loads, build.get("pretrained_cfg_overlay"))
        head = SmpDecodeHead(model.decoder, model.segmentation_head)
        super().__init__(model.encoder, head, num_classes)
        self._build = {"arch": archs[arch.lower()], "encoder_name": encoder, **kwargs}
        self.side_multiple = int(model.encoder.output_stride)  # smp's encoder's
        if archs[arch.lower()] == "PAN":  # its pyramid attention halves its map 3 times
            self.min_side = 8 * self.side_multiple  # (stride 16: 128 px trains, 112 px fails)

    def scale_attention_head(self, num_outputs: int) -> nn.Module:
        """A scale-attention head for HRDA: a freshly initialised decoder and segmentation
        head of the same smp architecture with ``num_outputs`` outputs (HRDA takes its
        attention head from the segmentation head's architecture).

        Args:
            num_outputs: attention channels (the classes, or 1 for one shared attention).

        Returns:
            an ``SmpDecodeHead`` mapping this encoder's features to (B, num_outputs, H, W).
        """
        import segmentation_models_pytorch as smp

        model = smp.create_model(encoder_weights=None, classes=num_outputs, **self._build)
        return SmpDecodeHead(model.decoder, model.segmentation_head)
