"""A small catalog (the offline models' world): items with tags, a popularity and a recent-sales count."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    id: str
    tags: frozenset[str]
    popularity: int
    recent: int


def _items() -> dict[str, Item]:
    rows = [
        ("book-sci-1", "book scifi space", 90, 12), ("book-sci-2", "book scifi robots", 70, 30),
        ("book-sci-3", "book scifi time", 40, 2), ("book-fan-1", "book fantasy dragons", 95, 8),
        ("book-fan-2", "book fantasy magic", 60, 25), ("book-cook-1", "book cooking vegan", 50, 40),
        ("book-cook-2", "book cooking baking", 80, 5), ("film-sci-1", "film scifi space", 85, 50),
        ("film-sci-2", "film scifi robots", 45, 3), ("film-fan-1", "film fantasy dragons", 75, 9),
        ("film-doc-1", "film documentary nature", 65, 60), ("film-doc-2", "film documentary space", 55, 15),
        ("game-sci-1", "game scifi space", 88, 70), ("game-fan-1", "game fantasy magic", 77, 11),
        ("game-puz-1", "game puzzle logic", 35, 1), ("kit-bake-1", "kitchen baking tools", 42, 22),
        ("kit-vegan-1", "kitchen vegan cooking", 30, 4), ("tel-1", "telescope space astronomy", 58, 33),
    ]
    return {i: Item(i, frozenset(t.split()), p, r) for i, t, p, r in rows}


ITEMS = _items()
# Who bought what together: the collaborative recommender's evidence.
BASKETS = [
    {"book-sci-1", "film-sci-1", "game-sci-1", "tel-1"}, {"book-sci-2", "film-sci-2"},
    {"book-fan-1", "film-fan-1", "game-fan-1"}, {"book-fan-2", "game-fan-1"},
    {"book-cook-1", "kit-vegan-1"}, {"book-cook-2", "kit-bake-1"}, {"film-doc-1", "film-doc-2", "tel-1"},
    {"book-sci-1", "film-doc-2", "tel-1"}, {"game-sci-1", "film-sci-1"},
]
