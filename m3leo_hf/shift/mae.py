"""A masked autoencoder (He et al. 2022) with a ViT encoder, in plain torch.

``MAEConfig.preset("vit-b16")`` is upstream's pretraining model (spaceml-org/M3LEO
``configs/mae-pretraining/s1grd``: ViT-B/16, 12 channels, 448 px, mask ratio 0.75, a 1-layer 512-wide
decoder with 16 heads, MSE on the masked patches' pixels); ``"tiny"`` is a small one for CPU tests.
``MaskedAutoencoder.embed`` is the chip embedding: the mean of the encoder's patch tokens, unmasked.
(Upstream's ``get_representation`` flattens all 785 tokens: 602,880 numbers per chip, too many for
the two-sample statistics.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MAEConfig:
    image_size: int = 448
    patch_size: int = 16
    channels: int = 12
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    decoder_width: int = 512
    decoder_depth: int = 1
    decoder_heads: int = 16
    mask_ratio: float = 0.75

    PRESETS = {  # class attribute (not a field: no annotation)
        "vit-b16": {},
        "tiny": dict(patch_size=16, width=64, depth=2, heads=4, decoder_width=64, decoder_depth=1, decoder_heads=4),
    }

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.heads or self.decoder_width % self.decoder_heads:
            raise ValueError("width and decoder_width must be multiples of their head counts")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), not {self.mask_ratio}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "MAEConfig":
        if name not in cls.PRESETS:
            raise ValueError(f"unknown MAE preset {name!r}; known: {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "MAEConfig":
        return cls(**json.loads(text))


def _blocks(width: int, depth: int, heads: int, mlp_ratio: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, int(width * mlp_ratio), dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p * W/p, p*p*C) in row-major patch order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class MaskedAutoencoder(nn.Module):
    def __init__(self, config: MAEConfig):
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = nn.Conv2d(c.channels, c.width, kernel_size=c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width))
        self.position = nn.Parameter(torch.randn(1, c.patches + 1, c.width) * 0.02)
        self.encoder = _blocks(c.width, c.depth, c.heads, c.mlp_ratio)
        self.norm = nn.LayerNorm(c.width)
        self.decoder_embed = nn.Linear(c.width, c.decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_width))
        self.decoder_position = nn.Parameter(torch.randn(1, c.patches + 1, c.decoder_width) * 0.02)
        self.decoder = _blocks(c.decoder_width, c.decoder_depth, c.decoder_heads, c.mlp_ratio)
        self.decoder_norm = nn.LayerNorm(c.decoder_width)
        self.predict = nn.Linear(c.decoder_width, c.patch_size ** 2 * c.channels)

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1:] != (self.config.channels, self.config.image_size, self.config.image_size):
            raise ValueError(f"MAE expects (B, {self.config.channels}, {self.config.image_size}, "
                             f"{self.config.image_size}) inputs, got {tuple(images.shape)}")
        return self.patch_embed(images).flatten(2).transpose(1, 2) + self.position[:, 1:]

    def encode(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output (B, 1 + kept patches, width): class token first; all patches without ``keep``."""
        tokens = self._tokens(images)
        if keep is not None:
            tokens = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        cls = (self.cls_token + self.position[:, :1]).expand(len(tokens), -1, -1)
        return self.norm(self.encoder(torch.cat([cls, tokens], dim=1)))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, width) chip embeddings: mean of the patch tokens of the unmasked image."""
        return self.encode(images)[:, 1:].mean(dim=1)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE of the reconstructed pixels of a random ``mask_ratio`` of the patches."""
        b, n = len(images), self.config.patches
        kept = max(1, int(round(n * (1 - self.config.mask_ratio))))
        noise = torch.rand(b, n, device=images.device, generator=generator)
        order = noise.argsort(dim=1)
        keep, masked = order[:, :kept], order[:, kept:]
        latent = self.decoder_embed(self.encode(images, keep))
        full = self.mask_token.expand(b, n, -1).to(latent.dtype).clone()
        full.scatter_(1, keep[..., None].expand(-1, -1, full.shape[-1]), latent[:, 1:])
        decoded = self.decoder(torch.cat([latent[:, :1], full], dim=1) + self.decoder_position)
        prediction = self.predict(self.decoder_norm(decoded[:, 1:]))
        target = patchify(images, self.config.patch_size)
        index = masked[..., None].expand(-1, -1, target.shape[-1])
        predicted = torch.gather(prediction, 1, index).float()
        return nn.functional.mse_loss(predicted, torch.gather(target, 1, index).float())
