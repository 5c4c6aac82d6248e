"""Source converters by name. Each module parses one public format into RawEvent/RawItem."""

from __future__ import annotations

import importlib
from typing import Any

from data_prep.report import BadRecordReport
from data_prep.sources.base import RawEvent, RawItem, Source

SOURCE_CLASSES = {
    "synthetic": "data_prep.sources.synthetic:SyntheticSource",
    "amazon2023": "data_prep.sources.amazon2023:Amazon2023Source",
    "yelp": "data_prep.sources.yelp:YelpSource",
    "recbole": "data_prep.sources.recbole:RecBoleSource",
    "xrec": "data_prep.sources.xrec:XRecSource",
    "events": "data_prep.sources.events:EventsSource",
}


def get_source(name: str, inputs: dict[str, str], options: dict[str, Any], report: BadRecordReport) -> Source:
    if name not in SOURCE_CLASSES:
        raise ValueError(f"unknown source '{name}'; choose one of {sorted(SOURCE_CLASSES)}")
    module, cls = SOURCE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)(inputs, options, report)


__all__ = ["RawEvent", "RawItem", "Source", "get_source", "SOURCE_CLASSES"]
