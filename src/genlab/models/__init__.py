"""Model families; each import registers one family (see genlab.registry)."""
from genlab.models import cvae, text_vae, vae  # noqa: F401
from genlab.models import bigan_qp, fgan, gan, gan_qp, wgan_gp  # noqa: F401  (the GAN families)
from genlab.models import gated_pixelcnn, pixelcnn, pixelrnn  # noqa: F401  (autoregressive image models)
from genlab.models.base import (ConditionalModel, ExactLikelihoodModel, GenerativeModel, LatentModel,
                                LikelihoodModel, TextModel)

__all__ = ["GenerativeModel", "LatentModel", "LikelihoodModel", "ExactLikelihoodModel", "ConditionalModel",
           "TextModel"]
