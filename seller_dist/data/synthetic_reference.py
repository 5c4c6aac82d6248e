"""The synthetic source's reference template: which history event a reference cites, and its wording.
Prep writes every synthetic reference with it (`order_dependent_explanation`) and evaluation's oracles
re-run it on prepared records (`explanation_citing`), so it has one definition and `seller_dist` needs
nothing from `data_prep`; it reads only an event's item_id, timestamp and action and an item catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from seller_dist.data.catalog import ItemCatalog

ACTION_VERBS = {
    "view": "viewed",
    "click": "clicked on",
    "cart": "added to your cart",
    "purchase": "bought",
    "rate": "rated",
    "review": "reviewed",
}

RECENCY = ((3600, "just"), (86400, "earlier today"), (7 * 86400, "this week"))


class TemplateEvent(Protocol):
    item_id: str
    timestamp: int
    action: str


class TemplateItem(Protocol):
    title: str
    attributes: dict[str, str]


class TemplateCatalog(Protocol):
    def __getitem__(self, item_id: str) -> TemplateItem: ...

    def display_title(self, item_id: str) -> str: ...


@dataclass
class PreparedItem:
    title: str
    attributes: dict[str, str]


@dataclass
class PreparedItems:
    """A prepared dataset's items by item_id, as the template reads them (prep's Catalog, read back)."""

    items: dict[str, PreparedItem] = field(default_factory=dict)

    @staticmethod
    def from_catalog(catalog: ItemCatalog) -> PreparedItems:
        return PreparedItems(
            {
                catalog.item_ids[idx]: PreparedItem(catalog.titles[idx], dict(catalog.attributes[idx]))
                for idx in range(1, catalog.num_items + 1)
            }
        )

    def __getitem__(self, item_id: str) -> PreparedItem:
        return self.items[item_id]

    def display_title(self, item_id: str) -> str:
        """Like prep's Catalog.display_title: an item without a title is named by its id."""
        it = self.items.get(item_id)
        return (it.title if it and it.title else "") or f"item {item_id}"


def _recency(gap_s: int) -> str:
    for limit, words in RECENCY:
        if gap_s < limit:
            return words
    return "a while ago"


def relation_to(event: TemplateEvent, target: TemplateEvent, catalog: TemplateCatalog) -> str:
    """How a history event relates to the target: category+brand | category | brand | none."""
    tattrs, a = catalog[target.item_id].attributes, catalog[event.item_id].attributes
    same_cat = a.get("category") == tattrs.get("category")
    same_brand = a.get("brand") == tattrs.get("brand")
    if same_cat and same_brand:
        return "category+brand"
    return "category" if same_cat else "brand" if same_brand else "none"


def most_recent_related(
    history: Sequence[TemplateEvent], target: TemplateEvent, catalog: TemplateCatalog
) -> tuple[int, str]:
    """(index in history, relation) of the most recent event sharing the target's category or brand;
    (-1, "none") when there is none. This is the ground truth the reference cites."""
    for i in range(len(history) - 1, -1, -1):
        relation = relation_to(history[i], target, catalog)
        if relation != "none":
            return i, relation
    return -1, "none"


def order_dependent_explanation(
    history: Sequence[TemplateEvent], target: TemplateEvent, catalog: TemplateCatalog
) -> tuple[str, dict[str, Any]]:
    """Reference that names the most recent related history event, how (action) and when (gap)."""
    return explanation_citing(history, target, catalog, most_recent_related(history, target, catalog)[0])


def explanation_citing(
    history: Sequence[TemplateEvent], target: TemplateEvent, catalog: TemplateCatalog, i: int
) -> tuple[str, dict[str, Any]]:
    """The reference template citing history event i (-1: none, the "new direction" wording), worded
    for that event's own relation to the target. The reference cites the most recent related event;
    oracles (seller_dist.eval.oracles) cite others to measure what a metric rewards."""
    tgt = catalog[target.item_id]
    cat, brand = tgt.attributes.get("category", ""), tgt.attributes.get("brand", "")
    relation = relation_to(history[i], target, catalog) if i >= 0 else "none"
    if relation == "none":
        text = (
            f"{tgt.title} is a new direction for you: a {tgt.attributes.get('price_bucket', '')} "
            f"{cat} pick from {brand} that matches your current taste."
        )
        return text, {"cited_item_id": None, "cited_offset": -1, "cited_relation": relation}
    ev = history[i]
    cited_title = catalog.display_title(ev.item_id)
    when = _recency(target.timestamp - ev.timestamp)
    verb = ACTION_VERBS.get(ev.action, "interacted with")
    if when == "just":
        lead = f"Recommended because you just {verb} {cited_title}"
    else:
        lead = f"Recommended because you {verb} {cited_title} {when}"
    if relation == "category+brand":
        tail = f", another {cat} item from {brand}."
    elif relation == "category":
        tail = f": {tgt.title} is another {cat} item, this time from {brand}."
    else:
        tail = f", and {tgt.title} comes from the same brand, {brand}, now in {cat}."
    meta = {"cited_item_id": ev.item_id, "cited_offset": len(history) - 1 - i, "cited_relation": relation}
    return lead + tail, meta
