"""Model families; each import registers one family in ``genlab.registry.MODELS``. Adding a family is one file
here and one name in these imports."""
from genlab.models import (  # noqa: F401  (each import registers its families)
    bigan_qp,
    cvae,
    dim,
    fgan,
    gan,
    gan_qp,
    gated_pixelcnn,
    pixelcnn,
    pixelrnn,
    text_vae,
    vae,
    wgan_gp,
)
from genlab.models.base import GenerativeModel

__all__ = ["GenerativeModel"]
