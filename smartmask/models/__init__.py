"""Model loading: the project's one loader for local directories and Hugging Face hub ids (safetensors only)."""

from smartmask.models.loader import ModelNotFound, UnsafeWeights, is_offline, load_pretrained, model_revision

__all__ = ["ModelNotFound", "UnsafeWeights", "is_offline", "load_pretrained", "model_revision"]
