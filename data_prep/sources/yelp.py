"""Yelp Open Dataset: business.json (the catalog) and review.json (the events), JSON lines.

Business `attributes` hold Python-literal strings ("True", "u'free'", "{'garage': False, ...}"),
an artefact of how Yelp exported them. They are parsed with `ast.literal_eval` (literals only: no
names, calls or attribute access, so nothing in the data can run) after a length cap.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from data_prep.sources.base import RawEvent, RawItem, Source
from data_prep.sources.records import (
    BadField,
    check_utf8,
    clean_text,
    iter_json_lines,
    optional_str,
    rating_in_range,
    require_id,
)

MAX_LITERAL_CHARS = 2000  # the longest real attribute value is a few hundred characters
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d")  # current dumps; older dumps had dates only


def parse_literal(value: Any, field_name: str) -> Any:
    """One Yelp attribute value: a Python literal string -> its value (str, bool, None, int, dict)."""
    if not isinstance(value, str):
        if isinstance(value, (bool, int, float, dict)) or value is None:
            return value  # some re-exports already carry real JSON values
        raise BadField(field_name, f"expected a string or a JSON value, got {type(value).__name__}")
    if len(value) > MAX_LITERAL_CHARS:
        raise BadField(field_name, f"value longer than {MAX_LITERAL_CHARS} characters")
    try:
        out = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise BadField(field_name, "not a Python literal") from None
    if isinstance(out, dict):
        for k, v in out.items():
            if not isinstance(k, str) or not isinstance(v, (str, bool, int, float, type(None))):
                raise BadField(field_name, "nested value must map names to scalars")
    elif not isinstance(out, (str, bool, int, float, type(None))):
        raise BadField(field_name, f"unsupported literal type {type(out).__name__}")
    return out


def parse_attributes(raw: Any) -> dict[str, Any]:
    """{'WiFi': 'free', 'BusinessParking': {'garage': False, 'lot': True}, 'Caters': True, ...}."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadField("attributes", f"expected an object or null, got {type(raw).__name__}")
    return {str(k): parse_literal(v, f"attributes.{k}") for k, v in raw.items()}


def describe_attributes(attrs: dict[str, Any]) -> str:
    """Readable summary for the item text: 'Caters, WiFi: free, BusinessParking: lot, street'."""
    parts = []
    for k in sorted(attrs):
        v = attrs[k]
        if v is True:
            parts.append(k)
        elif isinstance(v, dict):
            on = sorted(name for name, flag in v.items() if flag is True)
            if on:
                parts.append(f"{k}: {', '.join(on)}")
        elif isinstance(v, str) and v and v.lower() not in ("none", "no"):
            parts.append(f"{k}: {v}")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{k}: {v:g}")
    return "; ".join(parts)


def parse_categories(raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, str):
        raise BadField("categories", f"expected a comma-separated string or null, got {type(raw).__name__}")
    return [c for c in (clean_text(p) for p in check_utf8(raw, "categories").split(",")) if c]


def parse_business(rec: dict[str, Any]) -> RawItem:
    item_id = require_id(rec, "business_id")
    name = clean_text(optional_str(rec, "name"))
    categories = parse_categories(rec.get("categories"))
    attrs_raw = parse_attributes(rec.get("attributes"))
    attrs: dict[str, str] = {}
    if categories:
        attrs["category"] = categories[0]
    for key in ("city", "state"):
        v = clean_text(optional_str(rec, key))
        if v:
            attrs[key] = v
    price = attrs_raw.get("RestaurantsPriceRange2")
    if (
        isinstance(price, (int, str))
        and not isinstance(price, bool)
        and str(price).strip() in ("1", "2", "3", "4")
    ):
        attrs["price_range"] = str(price).strip()
    stars = rec.get("stars")
    if stars is not None:
        attrs["stars"] = f"{rating_in_range(stars, 'stars'):g}"
    text_parts = [name]
    if categories:
        text_parts.append("Categories: " + ", ".join(categories))
    described = describe_attributes(attrs_raw)
    if described:
        text_parts.append(described)
    return RawItem(item_id=item_id, title=name, attributes=attrs, text=". ".join(p for p in text_parts if p))


def parse_date(raw: Any) -> int:
    """Yelp review dates are UTC wall-clock strings: 'YYYY-MM-DD HH:MM:SS' -> seconds since the epoch."""
    if raw is None:
        raise BadField("date", "missing")
    if not isinstance(raw, str):
        raise BadField("date", f"expected 'YYYY-MM-DD HH:MM:SS', got {type(raw).__name__}")
    for fmt in DATE_FORMATS:
        try:
            return int(datetime.strptime(raw.strip(), fmt).replace(tzinfo=timezone.utc).timestamp())
        except ValueError:
            continue
    raise BadField("date", "expected 'YYYY-MM-DD HH:MM:SS'")


def parse_review(rec: dict[str, Any]) -> RawEvent:
    user = require_id(rec, "user_id")
    item = require_id(rec, "business_id")
    ts = parse_date(rec.get("date"))
    if "stars" not in rec:
        raise BadField("stars", "missing")
    rating = rating_in_range(rec["stars"], "stars")
    text = clean_text(optional_str(rec, "text"))
    if not text:
        raise BadField("text", "empty review text")
    return RawEvent(user_id=user, item_id=item, timestamp=ts, action="review", rating=rating, text=text)


class YelpSource(Source):
    """Yelp Open Dataset (yelp_academic_dataset_*.json, JSON lines).

    inputs:
      business: path or URL of business.json (optional: without it items have no attributes)
      review:   path or URL of review.json (required)
    options: none.

    Item (business): title = name, attributes category (first of `categories`), city, state,
    price_range (attributes.RestaurantsPriceRange2), stars; text = name + categories + a summary of
    the parsed attributes. Event (review): action "review", rating = stars, text = review text,
    timestamp = `date` read as UTC. Reviews of businesses missing from business.json are still
    events (their items get no metadata). Bad records (reported, skipped): malformed or truncated
    JSON lines (the published review.json ends mid-record), missing ids, unparseable date, stars
    outside [1, 5], empty text, attribute values that are not Python literals.
    """

    name = "yelp"

    def __init__(self, inputs, options, report):
        super().__init__(inputs, options, report)
        if not inputs.get("review"):
            raise ValueError("yelp: inputs.review is required (path or URL of review.json)")

    def items(self) -> Iterator[RawItem]:
        url = self.inputs.get("business")
        if not url:
            return
        for n, rec in iter_json_lines(url, self.report):
            try:
                yield parse_business(rec)
            except BadField as e:
                self.report.reject(url, n, e.field, e.reason, rec)

    def events(self) -> Iterator[RawEvent]:
        url = self.inputs["review"]
        for n, rec in iter_json_lines(url, self.report):
            try:
                yield parse_review(rec)
            except BadField as e:
                self.report.reject(url, n, e.field, e.reason, rec)
