"""Training-side building blocks: packed (varlen) attention, a π0.5-like model, FP8 linears, and the
registry of model factories that checkpoints name (``register_factory``).

Importing this package pulls in torch only (no ray, no lance; torchao / flash-attn /
Transformer Engine are imported lazily where used).
"""

from training.fp8 import (
    FP8_ENGINES,
    FP8_RECIPES,
    EmulatedFloat8Linear,
    ScaledMMFloat8Linear,
    convert_to_fp8,
    fake_quantize_fp8,
    fp8_autocast,
    fp8_hardware_supported,
    fp8_module_filter,
    get_fp8_converter,
)
from training._attn_backends import BACKENDS as ATTENTION_BACKENDS
from training._attn_backends import get_attention_backend
from training.masks import make_attn_mask, sequence_mask, varlen_dense_mask
from training.packing import (
    check_cu_seqlens,
    cu_seqlens_from_lengths,
    packed_sequence_means,
    packed_token_mean,
    position_ids_from_cu_seqlens,
)
from training.pi05 import Pi05Backbone, Pi05Config, Pi05KVCache, RMSNorm, apply_rope, sincos_embedding, suffix_packing
from training.pi05_policy import Pi05Policy, flow_matching_targets, sample_actions, sample_actions_dense
from training.varlen import varlen_attention
from training.factories import FACTORIES, UnknownFactory, get_factory, register_factory

# the built-in model factories register themselves where they are defined; importing them here means any
# ``import training...`` (a checkpoint load in a fresh process included) knows their names
import training.vla  # noqa: E402,F401  - registers "vla"
import training.rl.policy  # noqa: E402,F401  - registers "gaussian_actor_critic"
import training.rl.flow_policy  # noqa: E402,F401  - registers "vla_flow" (the VLA as an RL policy)
import training.sims.experts  # noqa: E402,F401  - registers "metaworld_expert" (imports no simulator)
import training.sims.libero_expert  # noqa: E402,F401  - registers "libero_expert" (imports no simulator)

__all__ = [
    "ATTENTION_BACKENDS",
    "FACTORIES",
    "UnknownFactory",
    "get_factory",
    "register_factory",
    "EmulatedFloat8Linear",
    "ScaledMMFloat8Linear",
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
    "fake_quantize_fp8",
    "flow_matching_targets",
    "fp8_autocast",
    "fp8_hardware_supported",
    "fp8_module_filter",
    "get_attention_backend",
    "get_fp8_converter",
    "make_attn_mask",
    "packed_sequence_means",
    "packed_token_mean",
    "position_ids_from_cu_seqlens",
    "sample_actions",
    "sample_actions_dense",
    "sequence_mask",
    "sincos_embedding",
    "suffix_packing",
    "varlen_attention",
    "varlen_dense_mask",
]
