"""Neural-network building blocks of the guides: masked Set-Transformer attention (MAB, PMA, ISAB) and MLP
point encoders with masked pooling."""

from pyro_acp.nn.attention import ISAB, MAB, PMA
from pyro_acp.nn.encoders import MLPEncoder, mlp

__all__ = ["ISAB", "MAB", "PMA", "MLPEncoder", "mlp"]
