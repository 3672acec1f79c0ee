"""pythae's ``VAE`` (pythae 0.1.2, ``pip install pythae``), trained by pythae's own ``BaseTrainer``, for
measurement beside genlab. pythae is a benchmark-only peer: it is installed into .venv by ``make bench`` and is
not a genlab dependency.

The model: ``pythae.models.VAE`` with ``VAEConfig(input_dim=(1, 28, 28), latent_dim=20,
reconstruction_loss="bce")`` and MLP networks of the pytorch/examples sizes, 784-400-20 with ReLU and a sigmoid
output, written as pythae's ``BaseEncoder``/``BaseDecoder`` subclasses (``MLPEncoder``, ``MLPDecoder`` below).
Its loss (``pythae/models/vae/vae_model.py``, ``VAE.loss_function``) is the summed BCE over pixels plus the
analytic KL, averaged over the batch; trained with Adam 1e-3, batch 128.

The loop: ``pythae/pipelines/training.py``, ``TrainingPipeline.__call__``, turns the arrays into datasets with
its ``DataProcessor`` and builds a ``BaseTrainer`` (``pythae/trainers/base_trainer/base_trainer.py``);
``BaseTrainer.train()`` then runs ``prepare_training()`` (seed, optimizer, scheduler, output folder, callbacks)
and, per epoch, ``on_epoch_begin``, ``train_step(epoch)`` (the optimisation loop over its ``DataLoader`` of
per-sample ``DatasetOutput`` dicts collated by ``collate_dataset_output``), ``eval_step``, a ``deepcopy`` of the
best model, ``on_epoch_end``, and at the end saves the final model. ``TrainingPipeline`` cannot be driven one
epoch at a time (each call to ``train()`` builds a new optimizer and reseeds, so calling it with
``num_epochs=1`` repeatedly would reset Adam's moments and replay the same data order). So ``PythaeRun`` does
what the pipeline does up to ``trainer.train()`` -- the pipeline's own ``DataProcessor``, the same
``BaseTrainer`` -- calls ``prepare_training()`` once, and then runs the per-epoch body of ``BaseTrainer.train``
itself; the timed part is ``train_step(epoch)``, pythae's optimisation loop unchanged. Left out of the timing,
as for the other two models: the per-epoch evaluation (the test loss is measured by ``test()``, the same way
for every model), the best-model ``deepcopy`` and checkpoint saving (``steps_saving=None``). The progress-bar
callback that ``prepare_training`` always adds is removed, as genlab runs with ``progress=False`` and
pytorch/examples prints nothing per step.
"""
from __future__ import annotations

import logging
import tempfile
import time

import pythae  # noqa: F401  (fails here, with pythae's own message, when it is not installed)
import torch
import torch.nn.functional as F
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.pipelines import TrainingPipeline
from pythae.trainers import BaseTrainer, BaseTrainerConfig
from pythae.trainers.training_callbacks import ProgressBarCallback
from torch import nn

for _name in ("pythae", "pythae.pipelines.training", "pythae.trainers.base_trainer.base_trainer",
              "pythae.data.preprocessors", "pythae.models.base.base_model"):
    logging.getLogger(_name).setLevel(logging.WARNING)  # its INFO lines ("Model passed sanity check !") are noise


class MLPEncoder(BaseEncoder):
    """(B, 1, 28, 28) -> embedding (mu) and log_covariance (log sigma^2), (B, 20) each; 784-400-(20, 20)."""

    def __init__(self, latent_dim: int = 20, hidden: int = 400):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc21 = nn.Linear(hidden, latent_dim)
        self.fc22 = nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = F.relu(self.fc1(x.reshape(x.shape[0], -1)))
        return ModelOutput(embedding=self.fc21(h), log_covariance=self.fc22(h))


class MLPDecoder(BaseDecoder):
    """(B, 20) -> reconstruction, (B, 1, 28, 28) Bernoulli means; 20-400-784 with a sigmoid output."""

    def __init__(self, latent_dim: int = 20, hidden: int = 400):
        super().__init__()
        self.fc3 = nn.Linear(latent_dim, hidden)
        self.fc4 = nn.Linear(hidden, 784)

    def forward(self, z: torch.Tensor) -> ModelOutput:
        x = torch.sigmoid(self.fc4(F.relu(self.fc3(z))))
        return ModelOutput(reconstruction=x.reshape(z.shape[0], 1, 28, 28))


class PythaeRun:
    """pythae's VAE with its BaseTrainer; ``epoch()`` trains one epoch, ``test()`` scores the test split.

    ``train_x``/``test_x``: (N, 1, 28, 28) float32 in [0, 1]."""

    def __init__(self, train_x: torch.Tensor, test_x: torch.Tensor, seed: int = 1, batch_size: int = 128):
        self._out = tempfile.TemporaryDirectory(prefix="pythae-bench-")  # prepare_training() makes a folder here
        config = BaseTrainerConfig(output_dir=self._out.name, per_device_train_batch_size=batch_size,
                                   per_device_eval_batch_size=batch_size, num_epochs=1, learning_rate=1e-3,
                                   optimizer_cls="Adam", steps_saving=None, seed=seed, no_cuda=True)
        torch.manual_seed(seed)
        model_config = VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce")
        self.model = VAE(model_config, encoder=MLPEncoder(), decoder=MLPDecoder())
        pipeline = TrainingPipeline(model=self.model, training_config=config)  # validates model and config
        # what TrainingPipeline.__call__ does before trainer.train():
        train_ds = pipeline.data_processor.to_dataset(pipeline.data_processor.process_data(train_x))
        test_ds = pipeline.data_processor.to_dataset(pipeline.data_processor.process_data(test_x))
        pipeline._check_dataset(train_ds)
        pipeline._check_dataset(test_ds)
        self.trainer = BaseTrainer(model=self.model, train_dataset=train_ds, eval_dataset=test_ds,
                                   training_config=config)
        self.trainer.prepare_training()  # seeds, builds Adam, the output folder and the callbacks, once
        handler = self.trainer.callback_handler
        handler.callbacks = [c for c in handler.callbacks if not isinstance(c, ProgressBarCallback)]
        self.epochs_done = 0

    def epoch(self) -> tuple[float, float]:
        """One training epoch of BaseTrainer: (its average train loss per image, seconds of ``train_step``)."""
        self.epochs_done += 1
        t = self.trainer
        t.training_config.num_epochs = self.epochs_done  # only read by callbacks' messages
        t.callback_handler.on_epoch_begin(training_config=t.training_config, epoch=self.epochs_done,
                                          train_loader=t.train_loader, eval_loader=t.eval_loader)
        start = time.perf_counter()
        loss = t.train_step(self.epochs_done)
        seconds = time.perf_counter() - start
        t.callback_handler.on_epoch_end(training_config=t.training_config)
        return float(loss), seconds

    @torch.no_grad()
    def test(self) -> float:
        """Summed BCE + KL per test image (nats), one posterior sample per image, as pytorch/examples reports.

        Weighted by batch size, unlike ``BaseTrainer.eval_step``, which averages batch means (a small partial
        last batch would count as much as a full one)."""
        self.model.eval()
        total, n = 0.0, 0
        for inputs in self.trainer.eval_loader:
            out = self.model(inputs)
            b = len(inputs["data"])
            total += out.loss.item() * b
            n += b
        self.model.train()
        return total / n

    def forward_batch(self, x: torch.Tensor) -> torch.Tensor:
        """One training forward pass (model and loss) on (B, 1, 28, 28) images; for counting MACs."""
        return self.model({"data": x}).loss

    def close(self) -> None:
        self._out.cleanup()
