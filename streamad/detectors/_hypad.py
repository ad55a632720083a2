"""HypAD (Flaborea et al., CVPR 2023 VAND workshop): TadGAN's window reconstructor and critics
with the reconstruction error measured in the Poincare ball.

A Mobius linear map ``h`` sends the input window and its reconstruction into the ball; the
error is their hyperbolic distance, and the norm of ``h(reconstruction)`` is the model's
certainty (near the border = certain). The anomaly score is ``critic score * reconstruction
error * certainty``, so errors the model is unsure about raise fewer false alarms.

What HypAD shares with TadGAN (:mod:`._tadgan`) and AER (:mod:`._aer`) (windows, training
schedule, streaming scores, state) is :class:`._reconstructor.WindowReconstructor`; the critics
are :mod:`._critics`.
"""

from __future__ import annotations

import geoopt
import numpy as np
import torch
from torch import nn

from . import _hypad_scores as sc
from ._reconstructor import WindowReconstructor

__all__ = ["HypAD"]


class _MobiusLinear(nn.Module):
    """h(v) = proj(expmap0(W v) (+) b) on the Poincare ball (c = 1), W starting very small."""

    def __init__(self, n_in: int, n_out: int, init_scale: float = 1e-3):
        super().__init__()
        self.ball = geoopt.PoincareBall(c=1.0)
        self.weight = nn.Parameter(torch.randn(n_out, n_in) * init_scale)
        self.bias = geoopt.ManifoldParameter(torch.randn(n_out) * init_scale, manifold=self.ball)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        u = self.ball.expmap0(v.flatten(1) @ self.weight.t())
        return self.ball.projx(self.ball.mobius_add(u, self.bias))


class HypAD(WindowReconstructor):
    """TadGAN's LSTM-GAN with a hyperbolic reconstruction error and certainty.

    Parameters are :class:`~streamad.detectors._reconstructor.WindowReconstructor`'s, with
    one critic step per encoder/decoder step; HypAD's own:

    hyperbolic_dim
        Dimension of the Poincare ball that ``h`` maps a window into (None: the window's
        size, ``(window - 2) * d`` with prediction heads).
    scoring
        Two more rules: ``"uncertainty"`` (HypAD's, the default: critic * hyperbolic error *
        certainty) and ``"hyperbolic"`` (the same without certainty), besides TadGAN's and
        AER's. These two give one error per window, so a short anomaly is diluted by the rest
        of its windows: on NAB they miss most of AdEx's and Traffic's labelled windows, which
        "mult" (an error per point) finds (docs/log/hypad-nab.md, e037903).

    The encoder, decoder and ``h`` train on the Poincare distance between ``h(window)`` and
    ``h(reconstruction)`` plus the squared error.

    >>> import numpy as np
    >>> x = np.sin(np.arange(400) * 2 * np.pi / 40)[:, None]
    >>> det = HypAD(**HypAD._unit_test_params())
    >>> det.learn_many(x)
    >>> s = det.score_series(x)
    >>> s.shape, bool(np.all(np.isfinite(s)))
    ((400,), True)
    """

    name = "hypad"
    _window_rules = sc.HYPERBOLIC_RULES
    _scorings = (*sc.HYPERBOLIC_RULES, *WindowReconstructor._scorings)

    def __init__(self, window: int = 100, latent_dim: int = 20, encoder_hidden: int = 24,
                 decoder_hidden: int = 16, critic_size: int = 16, hyperbolic_dim: int | None = None,
                 epochs: int = 10, pretrain_epochs: int = 3, pretrain_lr: float = 2e-3,
                 windows_per_epoch: int = 2048, critic_iterations: int = 1, batch_size: int = 64,
                 critic_batches: str = "same",
                 lr: float = 5e-4, weight_decay: float = 1e-5, adversarial_weight: float = 1.0,
                 regression_weight: float = 0.0,
                 encoder_readout: str = "final", decoder: str = "upsample",
                 scoring: str = "uncertainty", rec_error: str = "dtw",
                 warmup: int = 1000,
                 history: int = 25000, refit_every: int | None = None, background: bool = False,
                 threads: int | None = None, seed: int = 0):
        super().__init__(**{k: v for k, v in locals().items() if k not in ("self", "__class__")})

    def _with_critics(self) -> bool:
        return True

    def _build(self) -> dict[str, nn.Module]:
        nets = super()._build()
        n_in = self._inner_len * self._d
        nets["h"] = _MobiusLinear(n_in, n_in if self.hyperbolic_dim is None else int(self.hyperbolic_dim))
        return nets

    def _reconstruction_params(self) -> list[nn.Parameter]:
        return super()._reconstruction_params() + list(self._nets["h"].parameters())

    def _rec_loss(self, x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
        # The Poincare distance alone does not teach the decoder to reconstruct: it also pulls
        # W towards 0 (distances shrink with it), and within a CPU budget of a few hundred steps
        # the reconstruction gradient vanishes with W (measured: point error stays at the level
        # of predicting 0). The squared error keeps TadGAN's reconstruction; the distance
        # trains h on top of it.
        h = self._nets["h"]
        return h.ball.dist(h(x_rec), h(x)).mean() + ((x - x_rec) ** 2).mean()

    def _window_outputs(self, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, np.ndarray]:
        """Also "rec", the hyperbolic distance between window and reconstruction, and
        "certainty", the norm of the mapped reconstruction."""
        out = super()._window_outputs(x, x_hat)
        h = self._nets["h"]
        hx, hh = h(self._inner(x)).double(), h(self._inner(x_hat)).double()
        out["rec"] = h.ball.dist(hh, hx).numpy()
        out["certainty"] = hh.norm(dim=1).numpy()
        return out
