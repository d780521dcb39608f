"""Providers make one image or one video at a time; see base.py for the interface."""

from aigen.providers.base import (
    AssetOutput,
    AssetRequest,
    Provider,
    Reporter,
    get_provider,
    provider_names,
    register,
)

__all__ = [
    "AssetOutput",
    "AssetRequest",
    "Provider",
    "Reporter",
    "get_provider",
    "provider_names",
    "register",
]
