"""genlab: deep generative models of images and short texts that train in minutes on a laptop CPU.

    import genlab
    model = genlab.train("vae", data="mnist-5k", epochs=5, latent_dim=2, out="runs/demo")
    images = model.sample(64)                 # (64, 1, 28, 28) in [0, 1]
    model = genlab.load("runs/demo")          # rebuilt from safetensors + JSON
    genlab.evaluate(model, quality=True)      # likelihood in nats, latent diagnostics, FID
    genlab.report("runs/demo")                # figures and runs/demo/report.html
"""
import gc as _gc

# Importing torch and genlab's modules creates some 170,000 objects and frees almost none; with the collector on,
# Python walks the growing heap again and again while they pile up (about 0.1 s of this import on a 2-core CPU).
# It is paused for the import and restored as it was: one collection later does the work of those walks.
_collecting = _gc.isenabled()
_gc.disable()
try:
    # The explorer's package is loaded first (it imports no web stack until it serves): importing a submodule binds the
    # package's name in its parent, so loaded later it would hide the function genlab.serve bound below.
    import genlab.serve as _explorer  # noqa: F401
    from genlab.api import (
        abilities,
        build_config,
        compare,
        complete,
        demo,
        evaluate,
        evaluate_run,
        interpolate,
        list_datasets,
        list_models,
        list_presets,
        load,
        load_dataset,
        load_run_data,
        probe,
        report,
        runs,
        sample,
        sample_text,
        serve,
        train,
        unknown_characters,
    )
    from genlab.version import __version__
finally:
    if _collecting:
        _gc.enable()

__all__ = ["train", "load", "evaluate", "evaluate_run", "sample", "complete", "sample_text", "interpolate",
           "unknown_characters", "report", "compare", "probe", "demo", "list_models", "list_presets", "list_datasets",
           "load_dataset", "load_run_data", "build_config", "abilities", "runs", "serve", "__version__"]
