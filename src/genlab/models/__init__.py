"""Model families; each import registers one family in ``genlab.registry.MODELS``. Adding a family is one file
here and one name in these imports."""
from genlab.models import bigan_qp, cvae, fgan, gan, gan_qp, gated_pixelcnn, pixelcnn, pixelrnn, text_vae, vae, wgan_gp  # noqa: F401  (the VAE families)  # noqa: F401  (the GAN families)  # noqa: F401  (autoregressive image models)
from genlab.models.base import GenerativeModel

__all__ = ["GenerativeModel"]
