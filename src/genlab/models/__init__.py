"""Model families; each import registers one family (see genlab.registry)."""
from genlab.models import cvae, vae  # noqa: F401
from genlab.models.base import ConditionalModel, GenerativeModel, LatentModel, LikelihoodModel

__all__ = ["GenerativeModel", "LatentModel", "LikelihoodModel", "ConditionalModel"]
