"""genlab: deep generative models of images and short texts that train in minutes on a laptop CPU.

    import genlab
    model = genlab.train("vae", data="mnist-5k", epochs=5, latent_dim=2, out="runs/demo")
    images = model.sample(64)                 # (64, 1, 28, 28) in [0, 1]
    model = genlab.load("runs/demo")          # rebuilt from safetensors + JSON
"""
__version__ = "0.1.0"

from genlab.api import (complete, evaluate, interpolate, list_models, load, load_dataset,  # noqa: E402
                        load_run_data, sample, sample_text, train)

__all__ = ["train", "load", "evaluate", "sample", "complete", "sample_text", "interpolate", "list_models", "load_dataset",
           "load_run_data", "__version__"]
