"""Segmentation models, one module per architecture, each a ``Segmenter`` (an ``encoder``
giving a feature pyramid and a ``decode_head`` giving logits):

- ``DAFormer`` (``daformer``): MiT encoder + context-aware fusion decoder, output stride 4.
- ``DeepLabV2`` (``deeplabv2``): dilated ResNet-101 + ASPP classifier, output stride 8.
- ``SmpModel`` (``smp``): any segmentation_models_pytorch architecture, full resolution.
- ``SmallUNet`` (``small_unet``): the bundled benchmark's small U-Net, full resolution.
- ``ContextUNet`` (``context_unet``): that U-Net with a global-context branch (self-attention
  and image pooling on its deepest map): every output pixel sees the whole image.
- ``HRDA`` (``hrda``): any of them at two resolutions (a context crop and a detail crop
  fused by a learned scale attention), with multi-resolution inference.

``base`` holds ``Segmenter``, encoders by name (``create_encoder``) and the shared parts.
Every model's ``forward(x, return_features=False)`` returns logits at its output stride (the
Task upsamples them), and with ``return_features=True`` also the encoder's feature maps.
"""

from mic.tasks.segmentation.models.base import (
    PyramidEncoder,
    Segmenter,
    SeparableConv,
    create_encoder,
    encoder_weights,
)
from mic.tasks.segmentation.models.context_unet import ContextUNet, ContextUNetHead, GlobalContext
from mic.tasks.segmentation.models.daformer import DAFormer, DAFormerHead
from mic.tasks.segmentation.models.deeplabv2 import DeepLabV2, DeepLabV2Head
from mic.tasks.segmentation.models.hrda import (
    HRDA,
    HRDAOutput,
    crop_per_image,
    detail_crop_boxes,
)
from mic.tasks.segmentation.models.small_unet import SmallUNet, SmallUNetEncoder, SmallUNetHead
from mic.tasks.segmentation.models.smp import SmpDecodeHead, SmpModel

__all__ = [
    "HRDA",
    "ContextUNet",
    "ContextUNetHead",
    "DAFormer",
    "DAFormerHead",
    "DeepLabV2",
    "DeepLabV2Head",
    "GlobalContext",
    "HRDAOutput",
    "PyramidEncoder",
    "Segmenter",
    "SeparableConv",
    "SmallUNet",
    "SmallUNetEncoder",
    "SmallUNetHead",
    "SmpDecodeHead",
    "SmpModel",
    "create_encoder",
    "crop_per_image",
    "detail_crop_boxes",
    "encoder_weights",
]
