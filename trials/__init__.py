"""Search methods, looked up by name. Each is a small subclass of ``trials.darts.Darts``."""

from __future__ import annotations

from trials.darts import Darts, Darts2

METHODS: dict[str, type[Darts]] = {
    "darts": Darts,
    "darts2": Darts2,
}
