"""Model families; each import registers one family (see genlab.registry)."""
from genlab.models import cvae, text_vae, vae  # noqa: F401
from genlab.models.base import ConditionalModel, GenerativeModel, LatentModel, LikelihoodModel, TextModel

__all__ = ["GenerativeModel", "LatentModel", "LikelihoodModel", "ConditionalModel", "TextModel"]
