"""Backbones by name, for every task: one factory over timm."""

from mic.backbones.factory import check_backbone_name, create_backbone
from mic.backbones.small import SmallCNN

__all__ = ["SmallCNN", "check_backbone_name", "create_backbone"]
