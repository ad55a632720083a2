"""TadGAN's two Wasserstein critics (Geiger et al., IEEE BigData 2020), as TadGAN and HypAD
train them next to a window reconstructor (:mod:`._reconstructor`).

Critic x judges whether a window looks real, critic z whether a latent looks like a Gaussian
sample. Both train with a gradient penalty (WGAN-GP, weight 10); the encoder and decoder add
``-(Cx(G(z)) + Cz(E(x)))`` to their loss, which keeps reconstructions realistic and latents
Gaussian, and critic x's value per window enters TadGAN's scoring rules ("mult", "sum").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["Training", "build"]


class _CriticX(nn.Module):
    """Conv1D stack over the window -> one realism value."""

    def __init__(self, d: int, channels: int, window: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, length = d, window
        for _ in range(3):
            layers += [nn.Conv1d(c_in, channels, 5, stride=2, padding=2), nn.LeakyReLU(0.2)]
            c_in, length = channels, (length + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.out = nn.Linear(channels * length, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.conv(x.transpose(1, 2)).flatten(1)).squeeze(1)


class _CriticZ(nn.Module):
    def __init__(self, latent: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)


def build(d: int, size: int, latent_dim: int, window: int) -> dict[str, nn.Module]:
    """The two critics, critic x first (the order they draw their initial weights in)."""
    return {"critic_x": _CriticX(d, size, window), "critic_z": _CriticZ(latent_dim, size)}


def _gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    alpha = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1))
    mix = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


class Training:
    """The critics' side of one training run: their optimiser (Adam, betas 0.5 / 0.9), the
    steps they take before each encoder/decoder step, and the term they add to its loss.

    ``nets`` holds the encoder, decoder and both critics; ``data`` the training windows;
    ``inner`` picks the part of a window the encoder reads. With ``fresh`` each critic step
    but the last trains on a batch of its own, all windows in turn, reshuffled (Orion's
    schedule); otherwise every step trains on the encoder/decoder step's batch.
    """

    def __init__(self, nets: dict[str, nn.Module], data: torch.Tensor, rng: np.random.Generator, *,
                 lr: float, batch_size: int, latent_dim: int,
                 inner: Callable[[torch.Tensor], torch.Tensor], fresh: bool):
        self.enc, self.dec = nets["encoder"], nets["decoder"]
        self.cx, self.cz = nets["critic_x"], nets["critic_z"]
        self.opt = torch.optim.Adam(list(self.cx.parameters()) + list(self.cz.parameters()),
                                    lr=lr, betas=(0.5, 0.9))
        self.data, self.latent_dim, self.inner = data, latent_dim, inner
        self._fresh = self._shuffled_batches(rng, len(data), batch_size) if fresh else None

    @staticmethod
    def _shuffled_batches(rng: np.random.Generator, n: int, bs: int) -> Iterator[np.ndarray]:
        while True:
            perm = rng.permutation(n)
            for i in range(0, max(1, len(perm) - bs + 1), bs):
                yield perm[i:i + bs]

    def step(self, x: torch.Tensor, n_steps: int) -> None:
        """``n_steps`` critic updates before the encoder/decoder step on batch ``x``."""
        cx, cz = self.cx, self.cz
        for k in range(n_steps):
            xc = x if k == n_steps - 1 or self._fresh is None else self.data[next(self._fresh)]
            z = torch.randn(len(xc), self.latent_dim)
            with torch.no_grad():
                x_fake = self.dec(z)
                z_enc = self.enc(self.inner(xc))
            loss = (cx(x_fake).mean() - cx(xc).mean()
                    + 10.0 * _gradient_penalty(cx, xc, x_fake)
                    + cz(z_enc).mean() - cz(z).mean()
                    + 10.0 * _gradient_penalty(cz, z, z_enc))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def realism(self, z_enc: torch.Tensor, n: int) -> torch.Tensor:
        """What the encoder and decoder maximise: critic x's value of ``n`` windows decoded
        from Gaussian latents plus critic z's value of the encoded latents ``z_enc``."""
        return self.cx(self.dec(torch.randn(n, self.latent_dim))).mean() + self.cz(z_enc).mean()
