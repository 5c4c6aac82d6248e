"""Source converters by name. Each module parses one public format into RawEvent/RawItem."""

from __future__ import annotations

import importlib
from typing import Any

from data_prep.sources.base import RawEvent, RawItem, Source
from seller_dist.data.bad_records import BadRecordReport
from seller_dist.errors import UserError

SOURCE_CLASSES = {
    "synthetic": "data_prep.sources.synthetic:SyntheticSource",
    "amazon2023": "data_prep.sources.amazon2023:Amazon2023Source",
    "yelp": "data_prep.sources.yelp:YelpSource",
    "recbole": "data_prep.sources.recbole:RecBoleSource",
    "xrec": "data_prep.sources.xrec:XRecSource",
    "events": "data_prep.sources.events:EventsSource",
}


class SourceConfigError(UserError, ValueError):
    """A source's inputs/options the user must change (the source's constructor rejected them)."""


def get_source(name: str, inputs: dict[str, str], options: dict[str, Any], report: BadRecordReport) -> Source:
    """The named source, built from its inputs/options. A ValueError from its constructor (a missing
    input, a bad option) becomes a SourceConfigError: still a ValueError, and a one-line CLI error."""
    if name not in SOURCE_CLASSES:
        raise SourceConfigError(f"unknown source '{name}'; choose one of {sorted(SOURCE_CLASSES)}")
    module, cls = SOURCE_CLASSES[name].split(":")
    source_cls = getattr(importlib.import_module(module), cls)
    try:
        return source_cls(inputs, options, report)
    except ValueError as e:
        if isinstance(e, UserError):
            raise
        raise SourceConfigError(str(e)) from e


__all__ = ["RawEvent", "RawItem", "Source", "SourceConfigError", "get_source", "SOURCE_CLASSES"]
