"""AER (Wong et al., IEEE BigData 2022): a window reconstructor whose decoder also predicts
each window's two end points, the first backwards and the last forwards; a point is scored by
its reconstruction error times its prediction error. No critics.

The reconstructor and its prediction heads are :class:`._reconstructor.WindowReconstructor`'s.
"""

from __future__ import annotations

from typing import Any

from ._reconstructor import WindowReconstructor

__all__ = ["AER"]


class AER(WindowReconstructor):
    """AER (Wong et al., IEEE BigData 2022): the LSTM encoder and decoder trained as a plain
    autoencoder whose decoder also predicts each window's ends (its first point backwards,
    its last forwards; ``regression_weight``), scored with AER's rule: reconstruction error
    times prediction error, each min-max scaled over the series ("aer"), or their mean
    ("aer-sum").

    Parameters are :class:`~streamad.detectors._reconstructor.WindowReconstructor`'s
    (``hyperbolic_dim`` is not used). No critics train and none enter the score; they are
    built, and trained as TadGAN's, only when asked for (``critic_iterations`` > 0 or a critic
    rule, "mult" / "sum").

    On NAB over three seeds it is above TadGAN's published F1 on Art, AWS, AdEx and Traffic
    and below it on Tweets, with fewer false intervals than ``TadGAN`` but a lower VUS-PR, at
    12 s median fit (docs/log/hypad-nab.md, ebd7400)."""

    name = "aer"

    def __init__(self, window: int = 100, latent_dim: int = 20, encoder_hidden: int = 24,
                 decoder_hidden: int = 16, critic_size: int = 16, hyperbolic_dim: int | None = None,
                 epochs: int = 10, pretrain_epochs: int = 3, pretrain_lr: float = 2e-3,
                 windows_per_epoch: int = 2048, critic_iterations: int = 0, batch_size: int = 64,
                 critic_batches: str = "same",
                 lr: float = 5e-4, weight_decay: float = 1e-5, adversarial_weight: float = 0.0,
                 regression_weight: float = 0.5,
                 encoder_readout: str = "final", decoder: str = "upsample",
                 scoring: str = "aer", rec_error: str = "dtw",
                 warmup: int = 1000,
                 history: int = 25000, refit_every: int | None = None, background: bool = False,
                 threads: int | None = None, seed: int = 0):
        super().__init__(**{k: v for k, v in locals().items() if k not in ("self", "__class__")})

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {**super()._unit_test_params(), "regression_weight": 0.5, "scoring": "aer"}
