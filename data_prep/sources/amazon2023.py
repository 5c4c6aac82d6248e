"""Amazon Reviews 2023 (McAuley Lab): review JSONL + item meta JSONL, `.jsonl` or `.jsonl.gz`.

Both files are streamed line by line (they reach tens of GB per category). Items are joined on
`parent_asin` (the product, not the colour/size variant `asin`), which is the item id here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from data_prep.sources.base import RawEvent, RawItem, Source
from data_prep.sources.records import (
    BadField,
    clean_text,
    iter_json_lines,
    join_title_text,
    optional_str,
    optional_str_list,
    rating_in_range,
    require_id,
    timestamp_seconds,
)

DEFAULT_PRICE_EDGES = (10.0, 25.0, 50.0, 100.0, 250.0)
_MISSING_PRICE = {"", "none", "null", "nan", "-", "—"}
_PRICE_CHARS = re.compile(r"[$,\s]")


def price_bucket(price: Any, edges: tuple[float, ...] = DEFAULT_PRICE_EDGES) -> str | None:
    """'<10', '10-25', ..., '>=250' from a number or a '$1,299.99' string; None when there is no price."""
    if price is None:
        return None
    if isinstance(price, bool):
        raise BadField("price", "expected a number or null, got a bool")
    if isinstance(price, str):
        s = _PRICE_CHARS.sub("", price)
        if s.lower() in _MISSING_PRICE:
            return None
        try:
            price = float(s)
        except ValueError:
            raise BadField("price", "expected a number or null, got a non-numeric string") from None
    if not isinstance(price, (int, float)) or price != price or price < 0:
        raise BadField("price", f"expected a non-negative number or null, got {type(price).__name__}")
    lo = None
    for edge in edges:
        if price < edge:
            return f"<{edge:g}" if lo is None else f"{lo:g}-{edge:g}"
        lo = edge
    return f">={edges[-1]:g}"


def parse_meta(rec: dict[str, Any], edges: tuple[float, ...] = DEFAULT_PRICE_EDGES) -> RawItem:
    item_id = require_id(rec, "parent_asin")
    attrs: dict[str, str] = {}
    for key in ("main_category", "store"):
        v = clean_text(optional_str(rec, key))
        if v:
            attrs[key] = v
    bucket = price_bucket(rec.get("price"), edges)
    if bucket:
        attrs["price_bucket"] = bucket
    categories = [c for c in (clean_text(c) for c in optional_str_list(rec, "categories")) if c]
    if categories:
        attrs["category"] = categories[0]
        if len(categories) > 1:
            attrs["leaf_category"] = categories[-1]
    parts = optional_str_list(rec, "description") + optional_str_list(rec, "features")
    return RawItem(
        item_id=item_id,
        title=clean_text(optional_str(rec, "title")),
        attributes=attrs,
        text=clean_text(" ".join(parts)),
    )


def parse_review(rec: dict[str, Any]) -> RawEvent:
    user = require_id(rec, "user_id")
    item = require_id(rec, "parent_asin")
    ts = timestamp_seconds(rec.get("timestamp"), "timestamp")
    if "rating" not in rec:
        raise BadField("rating", "missing")
    rating = rating_in_range(rec["rating"], "rating")
    text = join_title_text(optional_str(rec, "title"), optional_str(rec, "text"))
    if not text:
        raise BadField("text", "empty review (no title and no text)")
    return RawEvent(user_id=user, item_id=item, timestamp=ts, action="review", rating=rating, text=text)


class Amazon2023Source(Source):
    """Amazon Reviews 2023.

    inputs:
      reviews: path or URL of a review file (`<Category>.jsonl[.gz]`), required
      meta:    path or URL of the matching meta file (`meta_<Category>.jsonl[.gz]`), optional
               (without it items come without attributes)
    options:
      price_edges: bucket edges for the `price_bucket` attribute (default [10, 25, 50, 100, 250])

    Event: action "review", rating = `rating`, text = "`title`. `text`" (HTML <br> removed), timestamp
    = `timestamp` in ms -> seconds. Item: title, attributes main_category / store / price_bucket /
    category (first of `categories`) / leaf_category (last), text = description + features.
    Bad records (reported, skipped): malformed JSON, missing user_id / parent_asin / timestamp /
    rating, rating outside [1, 5], review with neither title nor text, wrong field types, a price
    that is not a number, "None" or null.
    """

    name = "amazon2023"

    def __init__(self, inputs, options, report):
        super().__init__(inputs, options, report)
        if not inputs.get("reviews"):
            raise ValueError("amazon2023: inputs.reviews is required (path or URL of <Category>.jsonl[.gz])")
        self.edges = tuple(float(e) for e in options.get("price_edges", DEFAULT_PRICE_EDGES))
        if not self.edges or list(self.edges) != sorted(self.edges):
            raise ValueError(f"amazon2023: price_edges must be a non-empty ascending list, got {self.edges}")

    def items(self) -> Iterator[RawItem]:
        url = self.inputs.get("meta")
        if not url:
            return
        for n, rec in iter_json_lines(url, self.report):
            try:
                yield parse_meta(rec, self.edges)
            except BadField as e:
                self.report.reject(url, n, e.field, e.reason, rec)

    def events(self) -> Iterator[RawEvent]:
        url = self.inputs["reviews"]
        for n, rec in iter_json_lines(url, self.report):
            try:
                yield parse_review(rec)
            except BadField as e:
                self.report.reject(url, n, e.field, e.reason, rec)
