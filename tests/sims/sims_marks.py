"""Skip marks for the simulator tests: they run where the ``sims`` extra is installed (``make sims``; CI does)."""

import pytest

from training.sims import available

needs_metaworld = pytest.mark.skipif(not available("metaworld"),
                                     reason="Meta-World is not installed (the sims extra: make sims)")
needs_libero = pytest.mark.skipif(not available("libero"),
                                  reason="LIBERO is not installed (the sims extra: make sims)")
