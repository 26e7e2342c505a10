"""The SFT demos' loss beside an RL objective (``algo.demo_coef`` > 0): packed batches of a lake's packed table,
streamed as SFT streams them, and the policy's own SFT loss on them (``VLA.loss``: flow matching on the demo action
chunks). Mixing it into each optimizer step keeps an RL-fine-tuned policy close to the data it was supervised on
(pi0.6 RECAP-style self-improvement keeps the demos in the mixture); a policy without ``loss`` cannot use it.

The lake version is pinned (``algo.demo_version``: the version the SFT run read), so the demos are the same
whatever RL trajectories land in the same lake meanwhile, and the order is seeded (``seed``): reproducible.
"""

from __future__ import annotations


class DemoStream:
    """Endless packed batches of ``uri``'s packed table of ``recipe`` (split ``train``), epoch after epoch."""

    def __init__(self, uri: str, recipe: str, version: int | None, seed: int):
        import lake

        lk = lake.open(uri, create=False)
        if version is not None:
            lk = lk.checkout(version)
        self.loader = lk.stream("train", recipe=recipe, seed=seed, batch_packs=1, num_workers=0)
        self.epoch, self._it = 0, iter(self.loader)

    def next(self):
        while True:
            try:
                batch = next(self._it)
            except StopIteration:  # epoch boundary: a new deterministic order, as SFT does
                self.epoch += 1
                self.loader.set_epoch(self.epoch)
                self._it = iter(self.loader)
                continue
            if batch.n_samples:
                return batch
