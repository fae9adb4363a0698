"""Keras → Cortex-M4 C exporter (see DESIGN.md for the pipeline)."""
from .errors import BudgetError, ExportError, UnsupportedModelError
from .export import export_model

__all__ = ["export_model", "ExportError", "UnsupportedModelError", "BudgetError"]
