"""Amazon Reviews (McAuley Lab) 2023, 2018 and 2014: review JSON lines + item meta lines, `.gz` or not,
streamed line by line. The format is told per record from its keys (2014 meta lines are Python dict
literals, not JSON); items are joined on `parent_asin` in 2023 (the product, not the colour/size variant
`asin`) and on `asin` in the older formats (docs/sources.md, "amazon2023").
"""

from __future__ import annotations

import ast
import html
import json
import re
from datetime import datetime, timezone
from typing import Any

from data_prep.sources.base import RawEvent, RawItem
from data_prep.sources.records import (
    BadField,
    JsonLinesSource,
    check_utf8,
    clean_text,
    decode_utf8,
    join_title_text,
    json_error_reason,
    optional_str,
    optional_str_list,
    rating_in_range,
    require_id,
    timestamp_seconds,
)

DEFAULT_PRICE_EDGES = (10.0, 25.0, 50.0, 100.0, 250.0)
FORMATS = ("2023", "2018", "2014")
_MISSING_PRICE = {"", "none", "null", "nan", "-", "—"}
_PRICE_CHARS = re.compile(r"[$,\s]")
_PRICE_RANGE = re.compile(r"(\d+(?:\.\d+)?)-\d+(?:\.\d+)?")  # "$10.99 - $15.99" without $ , spaces
# The 2018 scrape left page markup in some prices (".a-box-inner{background-color:#fff}..."): no price.
_MARKUP = re.compile(r"[{}<>;]")
_IMG_ALT = re.compile(r"""\balt=["']([^"']*)["']""", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]*>")
_MDY = re.compile(r"(\d{1,2})\s+(\d{1,2}),\s*(\d{4})")  # reviewTime "09 13, 2009" (month day, year)
# Keys only the 2014 / 2018 files have (2023 uses user_id, parent_asin, rating, timestamp, ...).
_LEGACY_REVIEW_KEYS = ("reviewerID", "overall", "unixReviewTime", "reviewTime", "reviewText")
_LEGACY_META_KEYS = ("asin", "main_cat", "category", "feature", "brand", "salesRank", "imUrl", "related")
MAX_LITERAL_LINE_CHARS = 1_000_000  # a 2014 meta line is a few KB; literal_eval's memory grows with it


def price_bucket(price: Any, edges: tuple[float, ...] = DEFAULT_PRICE_EDGES) -> str | None:
    """'<10', '10-25', ..., '>=250' from a number, a '$1,299.99' string or a '$10.99 - $15.99' range
    (its low end); None when there is no price (null, '', 'None', scraped page markup)."""
    if price is None:
        return None
    if isinstance(price, bool):
        raise BadField("price", "expected a number or null, got a bool")
    if isinstance(price, str):
        s = _PRICE_CHARS.sub("", price)
        if s.lower() in _MISSING_PRICE or _MARKUP.search(s):
            return None
        low_end = _PRICE_RANGE.fullmatch(s)
        try:
            price = float(low_end.group(1) if low_end else s)
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


def review_time_seconds(v: Any, field_name: str = "reviewTime") -> int:
    """Amazon's reviewTime 'M D, YYYY' ('09 13, 2009', '1 5, 2015') -> seconds at UTC midnight."""
    m = _MDY.fullmatch(v.strip()) if isinstance(v, str) else None
    if m:
        month, day, year = (int(g) for g in m.groups())
        try:
            return int(datetime(year, month, day, tzinfo=timezone.utc).timestamp())
        except ValueError:
            pass
    raise BadField(field_name, "expected 'M D, YYYY'")


def review_format(rec: dict[str, Any], forced: str | None = None) -> str:
    """'2023', or '2018' for the 2014/2018 review files (same fields: reviewerID, asin, overall, ...)."""
    if forced:
        return forced
    if "user_id" not in rec and "parent_asin" not in rec and any(k in rec for k in _LEGACY_REVIEW_KEYS):
        return "2018"
    return "2023"


def meta_format(rec: dict[str, Any], forced: str | None = None) -> str:
    """'2023', '2018' (asin, main_cat, category list, feature) or '2014' (categories list of lists)."""
    if forced:
        return forced
    if "parent_asin" in rec or "main_category" in rec or not any(k in rec for k in _LEGACY_META_KEYS):
        return "2023"
    cats = rec.get("categories")
    if "salesRank" in rec or (isinstance(cats, list) and any(isinstance(c, list) for c in cats)):
        return "2014"
    return "2018"


def _unescape(text: str) -> str:
    """2014/2018 scraped strings carry HTML entities ('Tools &amp; Home Improvement')."""
    return clean_text(html.unescape(text))


def _main_cat(raw: str) -> str:
    """2018 main_cat is a name or, for some stores, an <img ... alt="AMAZON FASHION"/> tag."""
    if "<" not in raw:
        return _unescape(raw)
    alt = _IMG_ALT.search(raw)
    return _unescape(alt.group(1) if alt else _TAGS.sub(" ", raw))


def _legacy_categories(rec: dict[str, Any]) -> list[str]:
    """2018 `category` (one path, a list of strings) or 2014 `categories` (paths: the first is used)."""
    key = "category" if rec.get("category") is not None else "categories"
    v = rec.get(key)
    if v is None:
        return []
    if isinstance(v, list) and v and all(isinstance(p, list) for p in v):
        v = v[0]  # 2014: [['Sports & Outdoors', 'Other Sports', 'Dance'], [...]]
    if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
        raise BadField(key, "expected a list of strings or a list of lists of strings")
    return [c for c in (_unescape(check_utf8(c, key)) for c in v) if c]


def _str_or_list(rec: dict[str, Any], key: str) -> list[str]:
    """2018 `description` is a list of strings, 2014's a string."""
    if isinstance(rec.get(key), str):
        return [optional_str(rec, key)]
    return optional_str_list(rec, key)


def _item(item_id: str, title: str, attrs: dict[str, str], categories: list[str], text: list[str]) -> RawItem:
    if categories:
        attrs["category"] = categories[0]
        if len(categories) > 1:
            attrs["leaf_category"] = categories[-1]
    return RawItem(item_id=item_id, title=title, attributes=attrs, text=clean_text(" ".join(text)))


def parse_legacy_meta(rec: dict[str, Any], edges: tuple[float, ...] = DEFAULT_PRICE_EDGES) -> RawItem:
    """A 2018 or 2014 meta record: asin, title, brand, main_cat, category(ies), price, description."""
    item_id = require_id(rec, "asin")
    attrs: dict[str, str] = {}
    main = _main_cat(optional_str(rec, "main_cat"))
    if main:
        attrs["main_category"] = main
    brand = _unescape(optional_str(rec, "brand"))
    if brand:
        attrs["store"] = brand
    bucket = price_bucket(rec.get("price"), edges)
    if bucket:
        attrs["price_bucket"] = bucket
    text = [_unescape(t) for t in _str_or_list(rec, "description") + optional_str_list(rec, "feature")]
    return _item(item_id, _unescape(optional_str(rec, "title")), attrs, _legacy_categories(rec), text)


def parse_meta(
    rec: dict[str, Any], edges: tuple[float, ...] = DEFAULT_PRICE_EDGES, fmt: str | None = None
) -> RawItem:
    """One meta record of any format (detected from its keys unless `fmt` forces one)."""
    if meta_format(rec, fmt) != "2023":
        return parse_legacy_meta(rec, edges)
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
    parts = optional_str_list(rec, "description") + optional_str_list(rec, "features")
    return _item(item_id, clean_text(optional_str(rec, "title")), attrs, categories, parts)


def parse_legacy_review(rec: dict[str, Any]) -> RawEvent:
    """A 2018 or 2014 review: reviewerID, asin, overall, unixReviewTime (else reviewTime), summary."""
    user = require_id(rec, "reviewerID")
    item = require_id(rec, "asin")
    if rec.get("unixReviewTime") is not None:
        ts = timestamp_seconds(rec["unixReviewTime"], "unixReviewTime")
    elif rec.get("reviewTime") is not None:
        ts = review_time_seconds(rec["reviewTime"], "reviewTime")
    else:
        raise BadField("unixReviewTime", "missing (and no reviewTime)")
    if "overall" not in rec:
        raise BadField("overall", "missing")
    rating = rating_in_range(rec["overall"], "overall")
    text = join_title_text(optional_str(rec, "summary"), optional_str(rec, "reviewText"))
    if not text:
        raise BadField("reviewText", "empty review (no summary and no reviewText)")
    return RawEvent(user_id=user, item_id=item, timestamp=ts, action="review", rating=rating, text=text)


def parse_review(rec: dict[str, Any], fmt: str | None = None) -> RawEvent:
    """One review of any format (detected from its keys unless `fmt` forces one)."""
    if review_format(rec, fmt) != "2023":
        return parse_legacy_review(rec)
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


def parse_meta_line(raw: bytes) -> dict[str, Any]:
    """One meta line: JSON (2018, 2023) or a Python dict literal with single quotes (2014 meta), read with
    `ast.literal_eval` after a length cap (literals only, nothing runs).
    """
    text = decode_utf8(raw)
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        rec = _python_literal_line(text, e)
    if not isinstance(rec, dict):
        raise BadField("json", f"expected a JSON object, got {type(rec).__name__}")
    return rec


def _python_literal_line(text: str, e: json.JSONDecodeError) -> Any:
    if not text.lstrip().startswith("{'"):
        raise BadField("json", json_error_reason(e, text))
    if len(text) > MAX_LITERAL_LINE_CHARS:
        raise BadField("line", f"Python-literal record longer than {MAX_LITERAL_LINE_CHARS:,} characters")
    try:
        return ast.literal_eval(text.strip())
    except SyntaxError as err:
        if any(s in (err.msg or "") for s in ("never closed", "unterminated", "unexpected EOF")):
            raise BadField("line", "truncated Python-literal record (the line ends mid-record)") from None
        raise BadField("line", "malformed Python-literal record") from None
    except (ValueError, TypeError, MemoryError, RecursionError):
        raise BadField("line", "malformed Python-literal record") from None


class Amazon2023Source(JsonLinesSource):
    """Amazon Reviews 2023, and the 2018 and 2014 releases (told apart per record by their keys): inputs
    `reviews` (required) and `meta` (optional: without it items have no metadata); options `price_edges`
    (default [10, 25, 50, 100, 250]) and `format` (2023 | 2018 | 2014, to force one). Fields, variants and
    bad records: docs/sources.md, "amazon2023".
    """

    name = "amazon2023"
    events_input, items_input = "reviews", "meta"
    decode_item_line = staticmethod(parse_meta_line)

    def __init__(self, inputs, options, report):
        super().__init__(inputs, options, report)
        if not inputs.get("reviews"):
            raise ValueError("amazon2023: inputs.reviews is required (path or URL of <Category>.jsonl[.gz])")
        self.edges = tuple(float(e) for e in options.get("price_edges", DEFAULT_PRICE_EDGES))
        if not self.edges or list(self.edges) != sorted(self.edges):
            raise ValueError(f"amazon2023: price_edges must be a non-empty ascending list, got {self.edges}")
        fmt = options.get("format")
        self.format = None if fmt is None else str(fmt)
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"amazon2023: options.format must be one of {list(FORMATS)}, got {fmt!r}")

    def parse_item(self, rec: dict[str, Any]) -> RawItem:
        return parse_meta(rec, self.edges, self.format)

    def parse_event(self, rec: dict[str, Any]) -> RawEvent:
        return parse_review(rec, self.format)
