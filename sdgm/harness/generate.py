"""Text generation: ordinary autoregressive sampling (any model) and SDGM's GMM-sampled coefficients.

GMM mode follows the paper's generative story: the mixing vector of each new position is drawn from the
fitted mixture instead of being encoded from the tokens, decoded through the atoms, and the head turns it
into the next-token distribution. The prompt's positions keep their encoded coefficients.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.interface import LanguageModel
from ..spectral.gmm import sample_gmm


def _draw(logits: torch.Tensor, temperature: float, top_k: int | None, gen: torch.Generator) -> torch.Tensor:
    """logits (B, V) -> token ids (B, 1)."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=gen)


@torch.no_grad()
def sample_autoregressive(
    model: LanguageModel,
    prompt: torch.Tensor,
    n_new: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """prompt (B, P) -> (B, P + n_new).

    The prompt goes through model.prefill, then one decode_step per new token (each model's own cache or
    recurrence where it has one, else a forward over its last max_context tokens). The result is the same as
    sampling from model.decode_reference(idx)[:, -1] at every step: the forward over the last max_context
    tokens, except that beyond max_context a model with decode_beyond_context "state" continues with its own
    state (sdgm.models.interface).
    """
    if prompt.shape[1] == 0:
        raise ValueError("the prompt needs at least one token")
    model.eval()
    gen = torch.Generator(device=prompt.device).manual_seed(seed)
    logits, state = model.prefill(prompt)  # (B, V)
    new = []
    for i in range(n_new):
        nxt = _draw(logits, temperature, top_k, gen)  # (B, 1)
        new.append(nxt)
        if i + 1 < n_new:
            logits, state = model.decode_step(nxt[:, 0], state)
    return torch.cat([prompt, *new], dim=1)


@torch.no_grad()
def sample_gmm_coefficients(
    model,
    gmm: dict,
    prompt: torch.Tensor,
    n_new: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """SDGM only (needs mixing_vectors/logits_from_coefficients). prompt (B, P) -> (B, P + n_new)."""
    model.eval()
    gen = torch.Generator(device=prompt.device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    L = model.max_context
    coeffs = model.encode(model.embed(prompt[:, -L:]))  # (B, P, K): the prompt's own coefficients
    idx = prompt
    for _ in range(n_new):
        # coefficients and tokens stay aligned: position t's coefficient predicts the token after t
        logits = model.logits_from_coefficients(coeffs[:, -L:], idx[:, -L:])[:, -1]  # (B, V)
        idx = torch.cat([idx, _draw(logits, temperature, top_k, gen)], dim=1)
        c_new = torch.as_tensor(sample_gmm(gmm, idx.shape[0], rng), dtype=coeffs.dtype, device=coeffs.device)
        coeffs = torch.cat([coeffs, c_new[:, None]], dim=1)[:, -L:]  # the new position's coefficient, from the GMM
    return idx


def decode_ids(ids, itos: list[str]) -> str:
    """Token ids -> text with one line per <eos>."""
    words = [itos[i] for i in ids]
    return " ".join(words).replace(" <eos> ", "\n").replace("<eos>", "\n").strip()


def write_samples(
    run_dir,
    gmm_path,
    out_path,
    prompt: str = "",
    n_samples: int = 3,
    n_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> str:
    """Write n_samples texts per mode (autoregressive; GMM coefficients when gmm_path is given) to out_path."""
    from ..common.atomic import write_bytes_atomic
    from ..data.tokens import EOS, UNK
    from ..models.registry import load_run
    from ..spectral.gmm import load_gmm

    model, stoi = load_run(run_dir)
    itos = [None] * len(stoi)
    for tok, i in stoi.items():
        itos[i] = tok
    words = prompt.split() or [EOS]
    unknown = [w for w in words if w not in stoi]
    if unknown and UNK not in stoi:
        raise ValueError(f"prompt words {unknown} are not in the vocabulary of {run_dir}")
    ids = torch.tensor([[stoi.get(w, stoi.get(UNK)) for w in words]] * max(n_samples, 1))
    kw = dict(temperature=temperature, top_k=top_k or None, seed=seed)
    sections = [("autoregressive", sample_autoregressive(model, ids, n_tokens, **kw))]
    if gmm_path:
        gmm_file = gmm_path[0] if isinstance(gmm_path, (list, tuple)) else gmm_path
        sections.append(("gmm-coefficients", sample_gmm_coefficients(model, load_gmm(gmm_file), ids, n_tokens, **kw)))
    lines = [
        f"# samples from {run_dir}: prompt {prompt!r}, temperature {temperature}, top_k {top_k or 'off'}, seed {seed}"
    ]
    for mode, out in sections:
        for i, row in enumerate(out[:n_samples].tolist()):
            lines += ["", f"## {mode} sample {i + 1}", decode_ids(row, itos)]
    text = "\n".join(lines) + "\n"
    write_bytes_atomic(out_path, text.encode())
    return text


def prompt_starts(n_tokens: int, prompts: int, prompt_tokens: int, new_tokens: int) -> list[int]:
    """Evenly spaced starts of `prompts` windows of prompt_tokens + new_tokens tokens in a split of n_tokens."""
    last = n_tokens - prompt_tokens - new_tokens
    if prompts < 1 or last < 0:
        raise ValueError(f"{prompts} prompts of {prompt_tokens} + {new_tokens} tokens do not fit {n_tokens} tokens")
    return [int(s) for s in np.linspace(0, last, prompts).round()]


def write_continuations(
    run_dir,
    gmm_path,
    tokens_dir,
    out_path,
    prompts: int = 32,
    prompt_tokens: int = 32,
    new_tokens: int = 128,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> dict:
    """Continue `prompts` prompts of the validation split (evenly spaced windows of prompt_tokens tokens) by
    new_tokens tokens, autoregressively and, with a GMM, from GMM-drawn coefficients; write the prompts, the
    continuations, the true continuations and every setting to out_path (JSON, words)."""
    from ..common.atomic import write_json_atomic
    from ..data.tokens import load_tokens
    from ..models.registry import load_run
    from ..spectral.gmm import load_gmm

    model, stoi = load_run(run_dir)
    splits, vocab = load_tokens(tokens_dir)
    if vocab != sorted(stoi, key=stoi.get):
        raise ValueError(f"{run_dir} was trained with another vocabulary than the tokens in {tokens_dir}")
    valid = splits["valid"]
    starts = prompt_starts(len(valid), prompts, prompt_tokens, new_tokens)
    ids = torch.stack([valid[s : s + prompt_tokens] for s in starts])
    kw = dict(temperature=temperature, top_k=top_k or None, seed=seed)
    outputs = {"autoregressive": sample_autoregressive(model, ids, new_tokens, **kw)}
    if gmm_path:
        gmm_file = gmm_path[0] if isinstance(gmm_path, (list, tuple)) else gmm_path
        outputs["gmm_coefficients"] = sample_gmm_coefficients(model, load_gmm(gmm_file), ids, new_tokens, **kw)
    words = lambda row: [vocab[i] for i in row]  # noqa: E731
    data = {
        "settings": {
            "split": "valid",
            "prompts": prompts,
            "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "seed": seed,
            "starts": starts,
        },
        "prompts": [
            {
                "start": s,
                "prompt": words(valid[s : s + prompt_tokens].tolist()),
                "true": words(valid[s + prompt_tokens : s + prompt_tokens + new_tokens].tolist()),
                **{mode: words(out[i, prompt_tokens:].tolist()) for mode, out in outputs.items()},
            }
            for i, s in enumerate(starts)
        ],
    }
    write_json_atomic(out_path, data)
    return data
