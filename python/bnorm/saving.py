"""bnorm.saving: keras.saving's load_model and save_model."""

from .models import load_model, save_model

__all__ = ["load_model", "save_model"]
