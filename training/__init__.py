"""Training-side building blocks: packed (varlen) attention, a π0.5-like model, FP8 linears.

Importing this package pulls in torch only (no ray, no lance; torchao / flash-attn /
Transformer Engine are imported lazily where used).
"""

from training.fp8 import FP8_ENGINES, FP8_RECIPES, convert_to_fp8, fp8_hardware_supported, fp8_module_filter
from training.layers import RMSNorm, apply_rope, sincos_embedding
from training.losses import packed_sequence_means, packed_token_mean
from training.masks import make_attn_mask, sequence_mask, varlen_dense_mask
from training.pi05 import Pi05Backbone, Pi05Config, Pi05KVCache
from training.pi05_policy import Pi05Policy, flow_matching_targets, sample_actions, sample_actions_dense
from training.varlen import check_cu_seqlens, cu_seqlens_from_lengths, position_ids_from_cu_seqlens, varlen_attention
from training._attn_backends import BACKENDS as ATTENTION_BACKENDS, get_attention_backend

__all__ = [
    "ATTENTION_BACKENDS",
    "FP8_ENGINES",
    "FP8_RECIPES",
    "Pi05Backbone",
    "Pi05Config",
    "Pi05KVCache",
    "Pi05Policy",
    "RMSNorm",
    "apply_rope",
    "check_cu_seqlens",
    "convert_to_fp8",
    "cu_seqlens_from_lengths",
    "flow_matching_targets",
    "fp8_hardware_supported",
    "fp8_module_filter",
    "get_attention_backend",
    "make_attn_mask",
    "packed_sequence_means",
    "packed_token_mean",
    "position_ids_from_cu_seqlens",
    "sample_actions",
    "sample_actions_dense",
    "sequence_mask",
    "sincos_embedding",
    "varlen_attention",
    "varlen_dense_mask",
]
