"""Models: trained centrally, published content-addressed."""

from coopgrid.registry.models import ModelRegistry

__all__ = ["ModelRegistry"]
