"""Yelp Open Dataset: business.json (the catalog) and review.json (the events), JSON lines. Business
`attributes` hold Python-literal strings ("u'free'", "{'garage': False}"), parsed with `ast.literal_eval`
after a length cap (literals only: nothing in the data can run); the forms of older dumps are read too
(docs/sources.md, "yelp").
"""

from __future__ import annotations

import ast
import re
from typing import Any

from data_prep.sources.base import RawEvent, RawItem
from data_prep.sources.records import (
    BadField,
    JsonLinesSource,
    check_utf8,
    clean_text,
    iso_seconds,
    optional_str,
    rating_in_range,
    require_id,
)

MAX_LITERAL_CHARS = 2000  # the longest real attribute value is a few hundred characters
MAX_PLAIN_CHARS = 200  # a plain (unquoted) attribute word: 'full_bar', 'casual', '21plus'
# Older dumps wrote some values unquoted ("full_bar", "very_loud", "21plus", "yes_free"). Such a value
# is taken as the string itself only when it is made of word characters and simple separators: no
# quotes, brackets or parentheses, so a broken literal ("{'garage': Fals") or code stays a bad record.
_PLAIN_WORDS = re.compile(r"\w(?:[\w .,&/+-]*\w)?")
_SCALARS = (str, bool, int, float, type(None))
# The 2014-2016 academic dataset named the price attribute "Price Range" (a JSON number).
PRICE_KEYS = ("RestaurantsPriceRange2", "Price Range")


def _check_nested(out: dict[Any, Any], field_name: str) -> dict[str, Any]:
    """A nested attribute ({'garage': False, 'lot': True}) maps names to scalars, nothing deeper."""
    for k, v in out.items():
        if not isinstance(k, str) or not isinstance(v, _SCALARS):
            raise BadField(field_name, "nested value must map names to scalars")
    return out


def parse_literal(value: Any, field_name: str) -> Any:
    """One Yelp attribute value -> str, bool, None, int, float or {name: scalar}: a Python-literal string
    read with `ast.literal_eval` (nothing in the data can run), a plain word of an older dump ("full_bar")
    or a real JSON value (true, 2, {"dessert": false}), kept as it is; anything else is a BadField.
    """
    if not isinstance(value, str):
        if isinstance(value, dict):
            return _check_nested(value, field_name)
        if isinstance(value, (bool, int, float)) or value is None:
            return value  # the 2014-2016 dumps and some re-exports carry real JSON values
        raise BadField(field_name, f"expected a string or a JSON value, got {type(value).__name__}")
    if len(value) > MAX_LITERAL_CHARS:
        raise BadField(field_name, f"value longer than {MAX_LITERAL_CHARS} characters")
    text = value.strip()
    try:
        out = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if not text or (len(text) <= MAX_PLAIN_CHARS and _PLAIN_WORDS.fullmatch(text)):
            return check_utf8(text, field_name)  # a plain word of an older dump, never evaluated
        raise BadField(field_name, "not a Python literal") from None
    if isinstance(out, dict):
        return _check_nested(out, field_name)
    if not isinstance(out, _SCALARS):
        raise BadField(field_name, f"unsupported literal type {type(out).__name__}")
    return out


def _attribute_entry(entry: Any) -> tuple[str, str]:
    """The 2017-2018 dumps list attributes as 'Name: value' strings ('WiFi: no')."""
    if not isinstance(entry, str):
        raise BadField(
            "attributes", f"list entries must be 'Name: value' strings, got {type(entry).__name__}"
        )
    name, sep, value = entry.partition(":")
    name = check_utf8(name.strip(), "attributes")
    if not sep or not name:
        raise BadField("attributes", "list entry is not 'Name: value'")
    return name, value


def parse_attributes(raw: Any) -> dict[str, Any]:
    """{'WiFi': 'free', 'BusinessParking': {'garage': False, 'lot': True}, 'Caters': True, ...} from an
    object of literal strings or JSON values (current and 2014-2016 dumps), a list of 'Name: value'
    strings (2017-2018 dumps) or null.
    """
    if raw is None:
        return {}
    if isinstance(raw, list):
        pairs = [_attribute_entry(e) for e in raw]
    elif isinstance(raw, dict):
        pairs = [(str(k), v) for k, v in raw.items()]
    else:
        raise BadField("attributes", f"expected an object, a list or null, got {type(raw).__name__}")
    return {k: parse_literal(v, f"attributes.{k}") for k, v in pairs}


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
    """'Cafes, Restaurants' (current dumps), ['Cafes', 'Restaurants'] (2014-2018 dumps) or null."""
    if raw is None:
        return []
    if isinstance(raw, list):
        if not all(isinstance(c, str) for c in raw):
            raise BadField("categories", "expected a list of strings")
        parts = [check_utf8(c, "categories") for c in raw]
    elif isinstance(raw, str):
        parts = check_utf8(raw, "categories").split(",")
    else:
        raise BadField(
            "categories", f"expected a comma-separated string, a list or null, got {type(raw).__name__}"
        )
    return [c for c in (clean_text(p) for p in parts) if c]


def price_range(attrs: dict[str, Any]) -> str | None:
    """'1'..'4' from RestaurantsPriceRange2 ("2") or the 2014-2016 "Price Range" (2); None otherwise."""
    for key in PRICE_KEYS:
        v = attrs.get(key)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, (int, str)) and not isinstance(v, bool) and str(v).strip() in ("1", "2", "3", "4"):
            return str(v).strip()
    return None


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
    price = price_range(attrs_raw)
    if price:
        attrs["price_range"] = price
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
    """A Yelp review date -> seconds since the epoch: 'YYYY-MM-DD HH:MM:SS' (current dumps), 'YYYY-MM-DD'
    (older dumps) or ISO 'YYYY-MM-DDTHH:MM:SS' (re-exports; a 'Z' or an offset is honoured, no zone = UTC).
    """
    if raw is None:
        raise BadField("date", "missing")
    if not isinstance(raw, str):
        raise BadField("date", f"expected 'YYYY-MM-DD HH:MM:SS', got {type(raw).__name__}")
    seconds = iso_seconds(raw.strip())
    if seconds is None:
        raise BadField("date", "expected 'YYYY-MM-DD HH:MM:SS'")
    return int(seconds)


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


class YelpSource(JsonLinesSource):
    """Yelp Open Dataset (yelp_academic_dataset_*.json, JSON lines): inputs `review` (required) and
    `business` (optional: without it items have no metadata); no options. Fields, variants and bad
    records: docs/sources.md, "yelp".
    """

    name = "yelp"
    events_input, items_input = "review", "business"

    def __init__(self, inputs, options, report):
        super().__init__(inputs, options, report)
        if not inputs.get("review"):
            raise ValueError("yelp: inputs.review is required (path or URL of review.json)")

    def parse_item(self, rec: dict[str, Any]) -> RawItem:
        return parse_business(rec)

    def parse_event(self, rec: dict[str, Any]) -> RawEvent:
        return parse_review(rec)
