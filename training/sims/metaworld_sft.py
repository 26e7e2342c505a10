"""The lean recipe that makes the reference VLA learn Meta-World from expert demos on a few CPU cores.

    recipe = metaworld_recipe()                     # lk.pack(recipe) on a lake of state-only demos
    SFTConfig(lake=uri, recipe=recipe.hash, model=METAWORLD_VLA, lr=SFT_LR, ...)

Inputs: Meta-World's 39-d state (hand, gripper, object poses, and the goal, visible once the task is set) and
the task text cut to 4 tokens (one task per lake: it carries no information, and a long text would be most of
every sample's tokens); no camera, so neither the demos nor the evaluations render. Outputs: 8-step action
chunks, 4 executed before re-planning. The VLA is small (width 64, depth 2) and also feeds the state to its
action expert (``state_in_suffix``): without that, 800 steps left it near the mean action (20% on reach).
"""

from __future__ import annotations

HORIZON = 8
METAWORLD_VLA = {"width": 64, "depth": 2, "heads": 4, "head_dim": 16, "exec_steps": 4, "state_in_suffix": True}
SFT_LR = 1e-3
INPUTS = "39-d state (goal visible) + task text, no camera"


def metaworld_recipe(name: str = "metaworld"):
    """State + text + action-chunk recipe for a lake of state-only Meta-World demos (``camera=False``)."""
    from packers import Recipe

    return Recipe(action_horizon=HORIZON, max_text_tokens=4, token_budget=2048, name=name)
