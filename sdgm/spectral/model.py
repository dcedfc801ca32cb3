"""Spectral Dictionary Generative Model (SDGM), after Kiruluta, arXiv:2505.00033.

    X      = Embed(idx)                                   (B, L, D)
    C      = act(Conv1D(X))                               (B, L, K)   mixing coefficients
    S_k(t) = A_k * sin(2 pi F_k t / L + Phi_k)            (L, K, D)   K learned spectral atoms
    X_hat  = sum_k C[:, t, k] S_k(t)                      (B, L, D)   O(K L D), no token-token products
                                                                      (sdgm/spectral/ops/: S is never stored
                                                                      whole unless decoder="naive")
    logits = Head(X_hat)                                  (B, L, V)   next token at t + 1

Choices where the paper is vague are listed in docs/paper-choices.md; the important one: the encoder is causal
(left padding), so C[:, t] and therefore logits[:, t] depend on tokens <= t only. `encoder_padding="centered"`
reproduces the symmetric-padding reading, which sees (kernel_size - 1) // 2 future tokens and is NOT a valid
language model; it exists to measure what leaking does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.interface import LanguageModel
from .losses import diag_gmm_nll, stft_loss
from .ops.dispatch import IMPLEMENTATIONS, check_kernels_for_run, spectral_decode, triton_status
from .ops.naive import spectral_atoms
from .ops.stream import AtomStream

ACTIVATIONS = {
    "relu": F.relu,
    "softplus": F.softplus,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}


@dataclass
class SDGMConfig:
    vocab_size: int = 10000
    d_model: int = 512  # D
    n_atoms: int = 256  # K
    seq_len: int = 128  # L: training window, and the period normaliser of the atoms
    kernel_size: int = 3  # Conv1D encoder kernel (receptive field in tokens)
    activation: str = "gelu"  # the paper writes act(.) without naming it
    encoder_padding: str = "causal"  # "causal" | "centered" (leaks future tokens, labelled as such)
    head: str = "linear"  # "linear" | "pointer" (pointer-generator over positions <= t)
    tie_weights: bool = True  # linear head shares the embedding matrix
    dropout: float = 0.0  # on X_hat before the head
    alpha: float = 1.0  # reconstruction MSE
    beta: float = 1.0  # STFT-magnitude MSE
    gamma: float = 1.0  # next-token NLL
    delta: float = 0.0  # GMM prior on C during training
    prior_components: int = 8  # components of the in-training GMM prior (delta > 0)
    recon_target_grad: bool = False  # let the MSE/STFT targets X pull on the embeddings (collapse-prone)
    stft_n_fft: int = 256
    stft_hop: int = 64
    decoder: str = "auto"  # X_hat = C S by: auto | naive | chunked | rotation | triton (spectral/ops/)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.encoder_padding not in ("causal", "centered"):
            raise ValueError(f"encoder_padding must be 'causal' or 'centered', got {self.encoder_padding!r}")
        if self.decoder not in IMPLEMENTATIONS:
            raise ValueError(f"decoder must be one of {', '.join(IMPLEMENTATIONS)}, got {self.decoder!r}")
        if self.head not in ("linear", "pointer"):
            raise ValueError(f"head must be 'linear' or 'pointer', got {self.head!r}")
        for name in ("vocab_size", "d_model", "n_atoms", "seq_len", "kernel_size", "stft_n_fft", "stft_hop"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


class SpectralAtoms(nn.Module):
    """K atoms with learned amplitude, frequency and phase per embedding dimension (each K x D)."""

    def __init__(self, n_atoms: int, d_model: int, seq_len: int):
        super().__init__()
        self.seq_len = seq_len
        self.amplitude = nn.Parameter(torch.randn(n_atoms, d_model) / math.sqrt(n_atoms))
        # frequencies in cycles per window, up to Nyquist (L / 2); phases uniform
        self.frequency = nn.Parameter(torch.rand(n_atoms, d_model) * (seq_len / 2))
        self.phase = nn.Parameter(torch.rand(n_atoms, d_model) * 2 * math.pi)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions: (T,) -> atoms S: (T, K, D), in fp32. The decoder never needs all of them at once."""
        return spectral_atoms(positions, self.amplitude, self.frequency, self.phase, self.seq_len)

    def mix(self, c: torch.Tensor, positions: torch.Tensor, impl: str = "auto") -> torch.Tensor:
        """C (B, T, K) at `positions` (T,) -> X_hat (B, T, D) = sum_k C[:, t, k] S_k(t), by the chosen implementation."""
        return spectral_decode(
            c.contiguous(), self.amplitude, self.frequency, self.phase, positions, self.seq_len, impl=impl
        )


class SDGM(LanguageModel):
    def __init__(self, cfg: SDGMConfig):
        super().__init__()
        self.cfg = cfg
        self.max_context = cfg.seq_len
        self.causal = cfg.encoder_padding == "causal"  # centered padding sees future tokens
        D, K, V = cfg.d_model, cfg.n_atoms, cfg.vocab_size
        self.embed = nn.Embedding(V, D)
        nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(D))
        self.encoder = nn.Conv1d(D, K, cfg.kernel_size)  # padding applied by hand in encode()
        self.atoms = SpectralAtoms(K, D, cfg.seq_len)
        self.drop = nn.Dropout(cfg.dropout)
        self.lm_head = nn.Linear(D, V)
        if cfg.tie_weights:
            self.lm_head.weight = self.embed.weight
        if cfg.head == "pointer":
            self.ptr_query = nn.Linear(D, D, bias=False)
            self.ptr_key = nn.Linear(D, D, bias=False)
            self.ptr_gate = nn.Linear(D, 1)
        if cfg.delta > 0:
            M = cfg.prior_components
            self.prior_means = nn.Parameter(torch.randn(M, K) * 0.1)
            self.prior_log_stds = nn.Parameter(torch.zeros(M, K))
            self.prior_logits = nn.Parameter(torch.zeros(M))

    # ---- the three stages -------------------------------------------------------------------------------
    def encoder_pad(self) -> tuple[int, int]:
        """(left, right) zero padding of the Conv1D along time."""
        k = self.cfg.kernel_size
        if self.cfg.encoder_padding == "causal":
            return k - 1, 0
        return (k - 1) // 2, k // 2

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) -> C: (B, L, K)."""
        h = F.pad(x.transpose(1, 2), self.encoder_pad())  # (B, D, L + k - 1)
        return ACTIVATIONS[self.cfg.activation](self.encoder(h)).transpose(1, 2)

    def decode(self, c: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """C: (B, L, K) -> X_hat: (B, L, D); positions (L,) default 0..L-1. cfg.decoder picks the implementation."""
        if positions is None:
            positions = torch.arange(c.shape[1], device=c.device)
        return self.atoms.mix(c, positions, self.cfg.decoder)

    def head(self, x_hat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """x_hat: (B, L, D), idx: (B, L) (copy source of the pointer head) -> logits (B, L, V)."""
        h = self.drop(x_hat)
        logits = self.lm_head(h)  # (B, L, V)
        if self.cfg.head == "linear":
            return logits
        # pointer-generator: p = g * softmax(logits) + (1 - g) * copy, copy attends to positions s <= t only
        L = idx.shape[1]
        q, k = self.ptr_query(h), self.ptr_key(h)  # (B, L, D)
        scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # (B, L, L)
        future = torch.ones(L, L, dtype=torch.bool, device=idx.device).triu(1)
        attn = scores.float().masked_fill(future, float("-inf")).softmax(-1)  # (B, L, L)
        p_copy = torch.zeros(logits.shape, dtype=attn.dtype, device=attn.device)
        p_copy.scatter_add_(2, idx[:, None, :].expand(-1, L, -1), attn)  # (B, L, V)
        gate = torch.sigmoid(self.ptr_gate(h).float())  # (B, L, 1)
        p = gate * logits.float().softmax(-1) + (1 - gate) * p_copy
        return torch.log(p.clamp_min(1e-12))  # log-probabilities are valid logits

    # ---- the contract -------------------------------------------------------------------------------------
    def parts(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """idx (B, L) -> X (B, L, D), C (B, L, K), X_hat (B, L, D)."""
        if idx.shape[1] > self.cfg.seq_len:
            raise ValueError(f"sequence of {idx.shape[1]} tokens exceeds seq_len={self.cfg.seq_len}")
        x = self.embed(idx)
        c = self.encode(x)
        return x, c, self.decode(c)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        _, _, x_hat = self.parts(idx)
        return self.head(x_hat, idx)

    def training_loss(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        x, c, x_hat = self.parts(idx)
        target = x if cfg.recon_target_grad else x.detach()
        logits = self.head(x_hat, idx)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        mse = F.mse_loss(x_hat.float(), target.float())
        stats = {"nll": nll.detach(), "mse": mse.detach()}
        loss = cfg.gamma * nll + cfg.alpha * mse
        if cfg.beta > 0:
            spec = stft_loss(x_hat, target, cfg.stft_n_fft, cfg.stft_hop)
            loss = loss + cfg.beta * spec
            stats["stft"] = spec.detach()
        if cfg.delta > 0:
            prior = diag_gmm_nll(c.flatten(0, 1), self.prior_means, self.prior_log_stds, self.prior_logits)
            loss = loss + cfg.delta * prior
            stats["prior"] = prior.detach()
        return loss, stats

    @torch.no_grad()
    def diagnostics(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean cosine similarity of the reconstruction X_hat with the embeddings X, over tokens."""
        x, _, x_hat = self.parts(idx)
        return {"cosine": F.cosine_similarity(x_hat.float(), x.float(), dim=-1).mean()}

    @torch.no_grad()
    def mixing_vectors(self, idx: torch.Tensor) -> torch.Tensor:
        """C for a batch of windows, flattened to (B * L, K), for fitting the GMM."""
        return self.encode(self.embed(idx)).flatten(0, 1)

    def logits_from_coefficients(self, c: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Decode given mixing vectors C (B, L, K) to logits; idx (B, L) are the tokens at those positions."""
        return self.head(self.decode(c), idx)

    # ---- incremental decoding: constant cost per token ------------------------------------------------------
    # With the causal encoder, C_t needs only the embeddings of tokens t-k+1 .. t, and X_hat_t only the atoms
    # at position t. The generic sampler reads the last L tokens, where the newest sits at window position
    # min(t, L - 1); the step uses that same position, so it reproduces the full forward exactly (tested).
    # The pointer head attends over every earlier position, and the centered encoder reads future tokens:
    # both fall back to the generic recompute of the interface.
    @property
    def incremental_decoding(self) -> bool:
        return self.cfg.encoder_padding == "causal" and self.cfg.head == "linear"

    def init_decode_state(self, batch_size: int, device: torch.device | str | None = None) -> dict:
        if not self.incremental_decoding:
            return super().init_decode_state(batch_size, device)
        if device is None:
            device = self.embed.weight.device
        k, D = self.cfg.kernel_size, self.cfg.d_model
        # the last k - 1 embeddings, oldest first; zeros before the first token (the encoder's left padding)
        return {
            "t": 0,
            "emb": torch.zeros(batch_size, k - 1, D, dtype=self.embed.weight.dtype, device=device),
            "atoms": self.atom_stream(),
        }

    def check_decoder_for_run(self, shapes, device: torch.device | str, dtype: torch.dtype) -> tuple[bool, str] | None:
        """Before a run on CUDA with decoder 'auto': the Triton kernels compiled and checked (in a child process) at
        the run's (B, L) shapes with C in `dtype` (sdgm.spectral.ops.dispatch.check_kernels_for_run); where they
        fail or fault, 'auto' takes chunked and the records say why. None where there is nothing to check."""
        device = torch.device(device)
        if self.cfg.decoder != "auto" or device.type != "cuda" or not triton_status(device)[0]:
            return None  # 'auto' says why where Triton cannot run
        K, D = self.cfg.n_atoms, self.cfg.d_model
        return check_kernels_for_run(device, [(int(B), int(L), K, D, dtype) for B, L in shapes])

    def atom_stream(self) -> AtomStream | None:
        """The atoms position by position for decode_step (a rotation per step instead of K x D sines); None with
        decoder "naive", whose steps evaluate the definition."""
        a = self.atoms
        return None if self.cfg.decoder == "naive" else AtomStream(a.amplitude, a.frequency, a.phase, self.cfg.seq_len)

    def decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """tokens (B,) -> logits (B, V): O(k D K + K D + D V) per token, whatever the position."""
        if not self.incremental_decoding:
            return super().decode_step(tokens, state)
        k, L = self.cfg.kernel_size, self.cfg.seq_len
        t = state["t"]
        x = self.embed(tokens)  # (B, D)
        recent = torch.cat([state["emb"], x[:, None]], dim=1)  # (B, k, D): tokens t-k+1 .. t
        window = recent
        if k > L:  # the full forward's window of L tokens pads what lies before it with zeros
            window = torch.cat([torch.zeros_like(recent[:, : k - L]), recent[:, k - L :]], dim=1)
        c = ACTIVATIONS[self.cfg.activation](self.encoder(window.transpose(1, 2)))  # (B, K, 1)
        stream = state.get("atoms")
        if stream is None:
            x_hat = self.decode(c.transpose(1, 2), torch.tensor([min(t, L - 1)], device=x.device))  # (B, 1, D)
        else:
            S = stream.at(min(t, L - 1))  # (K, D) in the parameters' dtype
            x_hat = (c[..., 0].to(S.dtype) @ S)[:, None].to(c.dtype)  # (B, 1, D)
        logits = self.head(x_hat, tokens[:, None])[:, 0]  # (B, V)
        return logits, {"t": t + 1, "emb": recent[:, 1:], "atoms": stream}

    def prefill(self, prompt: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        """prompt (B, P) -> (logits (B, V) after its last token, state): one forward over the last L tokens, and the
        state the steps would have left (the last k - 1 embeddings, zeros before the first token)."""
        if state is not None or not self.incremental_decoding:
            return super().prefill(prompt, state)
        B, P = prompt.shape
        keep = self.cfg.kernel_size - 1
        _, _, x_hat = self.parts(prompt[:, -self.max_context :])  # (B, <= L, D)
        logits = self.head(x_hat[:, -1:], prompt[:, -1:])[:, 0]  # (B, V): the head at the last position only
        emb = self.embed(prompt[:, max(0, P - keep) :])  # (B, <= k - 1, D)
        emb = torch.cat([emb.new_zeros(B, keep - emb.shape[1], emb.shape[2]), emb], dim=1)  # (B, k - 1, D)
        return logits, {"t": P, "emb": emb, "atoms": self.atom_stream()}

    def flops_per_token(self) -> int:
        cfg = self.cfg
        D, K, V = cfg.d_model, cfg.n_atoms, cfg.vocab_size
        flops = 2 * cfg.kernel_size * D * K  # encoder
        flops += 2 * K * D  # decoder: X_hat_t = C_t S(t)
        flops += 4 * K * D  # atoms S(t) for one position (mul, add, sin, mul), amortised per token
        flops += 2 * D * V  # linear head
        if cfg.head == "pointer":
            flops += 2 * 2 * D * D + 2 * 2 * cfg.seq_len * D  # q, k projections; scores and copy at full window
        return flops

    def state_bytes_per_sequence(self) -> int:
        # incremental decoding keeps the last kernel_size - 1 embeddings (fp32); the atom stream (sin, cos and atoms
        # at the current position, one rotation step: 5 K D fp32) is shared by every sequence of the batch
        return (self.cfg.kernel_size - 1) * self.cfg.d_model * 4
