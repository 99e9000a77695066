"""RQ-VAE (TIGER-style): an MLP autoencoder whose latent is quantized by residual codebooks, trained end to end.

encoder (D -> hidden -> latent) -> residual quantizer (L codebooks of K codes over the latent) -> decoder
(latent -> hidden -> D). The codebooks start from residual k-means on the latents of the first batch (reusing
align.sid.rqkmeans), so no code starts dead. Gradients pass the quantizer by the straight-through estimator; each
level adds a codebook loss |sg(r) - e|^2 and a commitment loss beta |r - sg(e)|^2 (beta = 0.25, as in VQ-VAE).
The loss is |x - x_hat|^2 + the mean of those terms over levels.

With `sinkhorn`, the last level assigns codes by Sinkhorn-Knopp on the distances of each batch (as in LC-Rec): a
nearly uniform transport plan, so items of a batch spread over the last-level codes and SIDs collide less.

Deterministic for a seed on the CPU: model init, batch order and the k-means init all draw from that seed.
"""

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from align.sid.rqkmeans import RQResult, _check_inputs, fit_rq_kmeans

logger = logging.getLogger(__name__)

BETA = 0.25  # commitment weight
SINKHORN_EPSILON = 0.003  # entropy of the transport plan on distances scaled to [-1, 1] (LC-Rec's setting)
SINKHORN_ITERS = 50
ENCODE_CHUNK = 65536  # rows encoded and assigned at once after training


@dataclass
class RQVAEResult(RQResult):
    """RQResult whose codebooks live in the latent space of `encoder`; `decoder` maps code sums back to D.

    Attributes (besides RQResult's):
        encoder: (N, D) -> (N, latent) MLP.
        decoder: (N, latent) -> (N, D) MLP.
        sinkhorn: whether the last level is assigned by Sinkhorn (kept for re-assigning new items alike).
    """

    encoder: nn.Module | None = None
    decoder: nn.Module | None = None
    sinkhorn: bool = False

    @torch.no_grad()
    def reconstruct(self, codes: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L) codes (default: the fitted ones) -> (N, D) decoded sum of their latent codes."""
        return self.decoder(super().reconstruct(codes))

    @torch.no_grad()
    def to_code_space(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(nn.Linear(width_in, width_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def fit_rq_vae(
    x: torch.Tensor,
    levels: int = 3,
    codebook_size: int = 256,
    latent_dim: int = 32,
    hidden_dim: int = 256,
    epochs: int = 200,
    lr: float = 1e-3,
    batch_size: int = 256,
    sinkhorn: bool = False,
    iters: int = 20,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> RQVAEResult:
    """Train an RQ-VAE on `x` and return the codes of every row.

    Args:
        x: (N, D) embeddings.
        levels, codebook_size: L codebooks of K codes each (K above N is lowered to N).
        latent_dim, hidden_dim: widths of the latent and of the hidden layer of encoder and decoder.
        epochs, lr, batch_size: Adam training schedule.
        sinkhorn: assign the last level by Sinkhorn-Knopp (balanced) instead of the nearest code.
        iters: k-means iterations of the codebook initialisation.
        seed: seeds init, batch order and k-means.
        device: where to train; default: x's device.

    Returns:
        RQVAEResult with codes (N, L), latent codebooks and modules on the CPU; level_errors[l] is the mean
        |x - decoder(sum of codes 0..l)|^2.
    """
    sizes = _check_inputs(x, levels, codebook_size)
    device = torch.device(device) if device is not None else x.device
    x = x.to(device=device, dtype=torch.float32)
    n = x.shape[0]
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = mlp([x.shape[1], hidden_dim, latent_dim]).to(device)
        decoder = mlp([latent_dim, hidden_dim, x.shape[1]]).to(device)
    batch_size = min(batch_size, n)
    first = torch.randperm(n, generator=generator)[: max(batch_size, 4 * max(sizes))].to(device)
    with torch.no_grad():
        init = fit_rq_kmeans(encoder(x[first]), levels, sizes, iters=iters, seed=seed, refine_sweeps=0)
    codebooks = nn.ParameterList([nn.Parameter(codebook.to(device)) for codebook in init.codebooks])
    params = [*encoder.parameters(), *decoder.parameters(), *codebooks.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    steps = epochs * math.ceil(n / batch_size)
    bar = tqdm(total=steps, desc="rq-vae")
    for _epoch in range(epochs):
        for batch in torch.randperm(n, generator=generator).to(device).split(batch_size):
            latent = encoder(x[batch])
            quantized, _, commit = _quantize(latent, list(codebooks), sinkhorn)
            loss = (decoder(quantized) - x[batch]).square().sum(1).mean() + commit
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()
    encoder.eval()
    decoder.eval()
    codebooks_out = [codebook.detach() for codebook in codebooks]
    codes, errors = _encode_all(x, encoder, decoder, codebooks_out, sinkhorn)
    logger.info("rq-vae: K=%s, reconstruction mse per level %s", sizes, [round(e, 4) for e in errors])
    return RQVAEResult(
        codes=codes.cpu(),
        codebooks=[codebook.cpu() for codebook in codebooks_out],
        level_errors=errors,
        encoder=encoder.cpu(),
        decoder=decoder.cpu(),
        sinkhorn=sinkhorn,
    )


def _quantize(
    latent: torch.Tensor, codebooks: list[torch.Tensor], sinkhorn: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, e) latents -> straight-through quantized latents (B, e), codes (B, L) and the mean codebook +
    commitment loss over levels."""
    residual, quantized, loss = latent, torch.zeros_like(latent), latent.new_zeros(())
    codes = []
    for level, codebook in enumerate(codebooks):
        distances = torch.cdist(residual.detach(), codebook.detach()).square()  # (B, K)
        last = level == len(codebooks) - 1
        code = sinkhorn_assign(distances) if sinkhorn and last else distances.argmin(1)
        chosen = codebook[code]
        loss = loss + (residual.detach() - chosen).square().sum(1).mean()
        loss = loss + BETA * (residual - chosen.detach()).square().sum(1).mean()
        straight_through = residual + (chosen - residual).detach()
        quantized = quantized + straight_through
        residual = residual - straight_through
        codes.append(code)
    return quantized, torch.stack(codes, 1), loss / len(codebooks)


def sinkhorn_assign(
    distances: torch.Tensor, epsilon: float = SINKHORN_EPSILON, iters: int = SINKHORN_ITERS
) -> torch.Tensor:
    """(B, K) distances -> (B,) codes from a Sinkhorn plan with uniform marginals (each code ~ B / K rows).

    Distances are centred and scaled to a range of 2, then log-domain Sinkhorn-Knopp alternates row and column
    normalisation of exp(-d / epsilon); each row takes its largest entry of the plan.
    """
    d = distances.double()
    span = (d.max() - d.min()).clamp(min=1e-12)
    log_plan = -(d - d.mean()) / span * 2 / epsilon
    for _ in range(iters):
        log_plan = log_plan - log_plan.logsumexp(0, keepdim=True)  # every code gets the same mass
        log_plan = log_plan - log_plan.logsumexp(1, keepdim=True)  # every row sums to one
    return log_plan.argmax(1)


@torch.no_grad()
def _encode_all(
    x: torch.Tensor, encoder: nn.Module, decoder: nn.Module, codebooks: list[torch.Tensor], sinkhorn: bool
) -> tuple[torch.Tensor, list[float]]:
    """Codes (N, L) of every row, chunk by chunk, and the mean |x - decoder(sum of levels 0..l)|^2 per level."""
    codes, totals = [], torch.zeros(len(codebooks), dtype=torch.float64, device=x.device)
    for chunk in x.split(ENCODE_CHUNK):
        _, chunk_codes, _ = _quantize(encoder(chunk), codebooks, sinkhorn)
        codes.append(chunk_codes)
        partial = torch.zeros(chunk.shape[0], codebooks[0].shape[1], device=x.device)
        for level, codebook in enumerate(codebooks):
            partial += codebook[chunk_codes[:, level]]
            totals[level] += (decoder(partial) - chunk).square().sum(dtype=torch.float64)
    return torch.cat(codes), (totals / x.shape[0]).tolist()
