"""Random search: every proposal a uniformly random cell not proposed before (the NB-201 paper's RS baseline)."""

from __future__ import annotations

from raynas.searchers.base import CellSearcher


class RandomSearcher(CellSearcher):
    """Uniform over the cells left; it learns nothing, so ``observe`` is the base class's no-op."""

    def propose(self) -> str:
        return self.random_unseen()
