"""A reference frozen image encoder (for recipes with ``image_encoder: frozen``): a fixed random patch
projection. Real use points ``Recipe.encoder`` at any ``module:factory`` returning such a module."""

from __future__ import annotations


def patch_embed(dim: int = 64, patch: int = 16, seed: int = 0):
    import torch

    class PatchEmbed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.proj = torch.nn.Conv2d(3, dim, patch, stride=patch)
            with torch.no_grad():
                self.proj.weight.copy_(torch.randn(self.proj.weight.shape, generator=g) * 0.02)
                self.proj.bias.zero_()

        def forward(self, x):  # (B, 3, H, W) -> (B, N, D)
            return self.proj(x).flatten(2).transpose(1, 2)

    return PatchEmbed()
