"""Model families; each import registers one family in ``genlab.registry.MODELS``. Adding a family is one file
here and one name in these imports."""
from genlab.models import cvae, text_vae, vae  # noqa: F401  (the VAE families)
from genlab.models import bigan_qp, fgan, gan, gan_qp, wgan_gp  # noqa: F401  (the GAN families)
from genlab.models import gated_pixelcnn, pixelcnn, pixelrnn  # noqa: F401  (autoregressive image models)
from genlab.models.base import GenerativeModel

__all__ = ["GenerativeModel"]
