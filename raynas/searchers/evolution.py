"""Regularised (aging) evolution, REA (Real et al., AAAI 2019), with the NB-201 paper's settings as defaults.

* The first ``population`` proposals are uniformly random cells.
* Every later proposal: draw ``sample_size`` members of the population uniformly (with replacement, as the
  NB-201 code does), take the fittest as the parent and mutate one edge: a uniformly chosen edge gets a
  uniformly chosen different op. Among the parent's 24 one-edge mutants only those never proposed are
  drawn from (so no cell is proposed twice); a parent whose mutants were all proposed gives a random cell.
* Every finished cell joins the population and the oldest member leaves once it holds ``population``
  (aging: the population is a queue, whatever the fitness of the one that leaves).

Fitness is the cell's score at its highest fidelity, and cells compare by fidelity first (under ASHA a cell
trained 200 epochs beats one stopped at 12). While no member has finished (parallel trials) proposals stay
random.
"""

from __future__ import annotations

from collections import deque

from raynas.config import ConfigError
from raynas.searchers.base import CellSearcher, best_of
from raynas.searchers.space import EDGE_KEYS
from search_spaces.nb201 import OPS_NB201, NB201Genotype, format_genotype, parse_genotype

POPULATION, SAMPLE_SIZE = 10, 3  # NB-201 paper (xautodl R_EA: --ea_population 10 --ea_sample_size 3)


def mutants(arch: str) -> list[str]:
    """The 24 cells that differ from ``arch`` in exactly one edge, edge by edge in op order."""
    ops = parse_genotype(arch).ops
    out = []
    for e in range(len(EDGE_KEYS)):
        for op in OPS_NB201:
            if op != ops[e]:
                out.append(format_genotype(NB201Genotype(ops[:e] + (op,) + ops[e + 1:])))
    return out


class RegularizedEvolution(CellSearcher):
    """REA over the NB-201 cell; ``population`` (P) and ``sample_size`` (S) as in Real et al."""

    def __init__(self, seed: int = 0, population: int = POPULATION, sample_size: int = SAMPLE_SIZE, **kw):
        if population < 1 or sample_size < 1:
            raise ConfigError(f"rea needs population >= 1 and sample_size >= 1, got {population}, {sample_size}")
        super().__init__(seed, **kw)
        self.population_size, self.sample_size = population, sample_size
        self.population: deque[tuple[str, tuple[int, float]]] = deque(maxlen=population)
        self.parents: list[str] = []  # the parent of every mutant proposed (for tests and diagnostics)

    def propose(self) -> str:
        if len(self.proposed) < self.population_size or not self.population:
            return self.random_unseen()
        sample = [self.rng.choice(self.population) for _ in range(self.sample_size)]
        parent = max(sample, key=lambda member: member[1])[0]
        fresh = [m for m in mutants(parent) if m not in self.seen]
        if not fresh:
            return self.random_unseen()
        self.parents.append(parent)
        return self.rng.choice(fresh)

    def observe(self, arch: str, scores: dict[int, float]) -> None:
        self.population.append((arch, best_of(scores)))  # deque(maxlen) drops the oldest
