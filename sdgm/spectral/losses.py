"""Loss terms of SDGM, each with a slow, obviously-correct reference used by the tests.

Total loss = alpha * MSE(X_hat, X) + beta * MSE(|STFT(X_hat)|, |STFT(X)|) + gamma * NLL + delta * prior NLL(C).
Every term is a mean (over elements, magnitudes, tokens, or mixing vectors), so the weights are comparable
across batch sizes and widths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# Kept out of torch.compile graphs: Inductor on CUDA fails on the complex STFT output (torch 2.11, H100:
# "InductorError: KeyError: 'complex64'"), so a compiled SDGM step runs this part eagerly.
@torch.compiler.disable
def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """|STFT| along the time axis of every channel.

    x: (B, L, D) -> (B, D, n_fft // 2 + 1, frames). Hann window (periodic), centred frames with zero padding
    of n_fft // 2 on each side. Zero (not reflect) padding because the paper's n_fft = 256 exceeds its
    L = 128, and reflect padding needs n_fft // 2 < L.
    """
    B, L, D = x.shape
    sig = x.transpose(1, 2).reshape(B * D, L).float()  # (B*D, L); STFT in fp32 even under autocast
    window = torch.hann_window(n_fft, device=x.device, dtype=sig.dtype)
    spec = torch.stft(
        sig,
        n_fft=n_fft,
        hop_length=hop,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )  # (B*D, F, T)
    return spec.abs().reshape(B, D, spec.shape[-2], spec.shape[-1])


def stft_magnitude_reference(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """The same quantity by the textbook definition: pad, frame, window, explicit DFT sum (slow)."""
    B, L, D = x.shape
    sig = x.transpose(1, 2).reshape(B * D, L).double()
    pad = n_fft // 2
    sig = F.pad(sig, (pad, pad))
    n = torch.arange(n_fft, dtype=torch.float64)
    window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft)  # periodic Hann
    n_frames = 1 + (sig.shape[-1] - n_fft) // hop
    n_freq = n_fft // 2 + 1
    out = torch.zeros(B * D, n_freq, n_frames, dtype=torch.float64)
    for m in range(n_frames):
        frame = sig[:, m * hop : m * hop + n_fft] * window  # (B*D, n_fft)
        for k in range(n_freq):
            ang = 2 * math.pi * k * n / n_fft
            re = (frame * torch.cos(ang)).sum(-1)
            im = -(frame * torch.sin(ang)).sum(-1)
            out[:, k, m] = torch.sqrt(re**2 + im**2)
    return out.reshape(B, D, n_freq, n_frames)


def stft_loss(x_hat: torch.Tensor, x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Mean squared difference of STFT magnitudes."""
    return F.mse_loss(stft_magnitude(x_hat, n_fft, hop), stft_magnitude(x, n_fft, hop))


def diag_gmm_nll(c: torch.Tensor, means: torch.Tensor, log_stds: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over vectors of -log p(c) / K under a diagonal Gaussian mixture.

    c: (N, K); means, log_stds: (M, K); logits: (M,) mixture weights before softmax.
    Divided by K so the term is per coefficient, like the other means.
    """
    c = c.float()
    K = c.shape[-1]
    z = (c[:, None, :] - means[None]) / log_stds.exp()[None]  # (N, M, K)
    log_comp = -0.5 * (z**2).sum(-1) - log_stds.sum(-1)[None] - 0.5 * K * math.log(2 * math.pi)  # (N, M)
    log_p = torch.logsumexp(log_comp + torch.log_softmax(logits, -1)[None], dim=-1)  # (N,)
    return -(log_p.mean()) / K


def diag_gmm_nll_reference(c, means, log_stds, logits) -> torch.Tensor:
    """Loop over vectors and components, densities by the normal formula."""
    weights = torch.softmax(logits.double(), -1)
    total = 0.0
    N, K = c.shape
    for i in range(N):
        p = 0.0
        for m in range(means.shape[0]):
            std = log_stds[m].double().exp()
            dens = torch.exp(-0.5 * ((c[i].double() - means[m].double()) / std) ** 2) / (std * math.sqrt(2 * math.pi))
            p = p + weights[m] * torch.prod(dens)
        total = total - torch.log(p)
    return total / N / K
