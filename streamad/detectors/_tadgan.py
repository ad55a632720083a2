"""TadGAN (Geiger et al., IEEE BigData 2020): a window reconstructor trained with two
Wasserstein critics, one on windows and one on latents, that keep reconstructions realistic
and latents Gaussian. A point is anomalous when the windows covering it reconstruct badly or
the window critic finds them unrealistic.

The reconstructor is :class:`._reconstructor.WindowReconstructor`, the critics :mod:`._critics`.
"""

from __future__ import annotations

from ._reconstructor import WindowReconstructor

__all__ = ["TadGAN"]


class TadGAN(WindowReconstructor):
    """TadGAN (Geiger et al., 2020): the LSTM encoder and decoder trained with a squared
    reconstruction error and two critics, scored with Orion's critic x reconstruction rules
    ("mult", the default, or "sum"; AER's rules with prediction heads).

    Parameters are :class:`~streamad.detectors._reconstructor.WindowReconstructor`'s
    (``hyperbolic_dim`` is not used). It takes Orion's five critic steps per encoder/decoder
    step (HypAD: one). On NAB over three seeds that raised TadGAN's F1 on Art, AWS, Traffic and
    Tweets and lowered it on AdEx and KnownCause, at twice the fit time (docs/log/hypad-nab.md,
    2ff3d48)."""

    name = "tadgan"

    def __init__(self, window: int = 100, latent_dim: int = 20, encoder_hidden: int = 24,
                 decoder_hidden: int = 16, critic_size: int = 16, hyperbolic_dim: int | None = None,
                 epochs: int = 10, pretrain_epochs: int = 3, pretrain_lr: float = 2e-3,
                 windows_per_epoch: int = 2048, critic_iterations: int = 5, batch_size: int = 64,
                 critic_batches: str = "same",
                 lr: float = 5e-4, weight_decay: float = 1e-5, adversarial_weight: float = 1.0,
                 regression_weight: float = 0.0,
                 encoder_readout: str = "final", decoder: str = "upsample",
                 scoring: str = "mult", rec_error: str = "dtw",
                 warmup: int = 1000,
                 history: int = 25000, refit_every: int | None = None, background: bool = False,
                 threads: int | None = None, seed: int = 0):
        super().__init__(**{k: v for k, v in locals().items() if k not in ("self", "__class__")})

    def _with_critics(self) -> bool:
        return True
