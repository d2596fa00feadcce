"""The request and response contract of `/v1/predict`, checked by hand for clear messages.

A request is `{"texts": ["...", ...]}`, or `{"records": [{...}, ...]}` for a tabular bundle.
Parsing is explicit rather than left to FastAPI's validation so that each refusal names the
offending item, what it was, and the limit it broke, in the one error shape of `errors.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from frugalml.serve.errors import ApiError
from frugalml.serve.settings import ServeSettings

MAX_LISTED = 20  # problems listed in one answer; the message gives the total


class Reason(BaseModel):
    feature: str
    value: Any
    impact: float
    unit: str


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]
    model_version: str
    reasons: list[Reason] | None = None  # models that explain themselves (tabular ones)


class PredictResponse(BaseModel):
    predictions: list[Prediction]


def _invalid(code: str, message: str) -> ApiError:
    return ApiError(422, code, message)


def parse_predict(body: bytes, settings: ServeSettings, *, tabular: bool) -> list[Any]:
    """The texts (or records) of a predict request; raises a 422 `ApiError` for anything else."""
    data = _json(body)
    key = "records" if tabular else "texts"
    example = '{"records": [{...}]}' if tabular else '{"texts": ["..."]}'
    if not isinstance(data, dict):
        raise _invalid("invalid_body", f"the body must be a JSON object like {example}")
    unknown = sorted(set(data) - {"texts", "records"})
    if unknown:
        raise _invalid("unknown_field", f"unknown field {unknown[0]!r}; send {example}")
    if "texts" in data and "records" in data:
        raise _invalid("texts_and_records", f"send texts or records, not both: {example}")
    if "records" in data and not tabular:
        raise _invalid(
            "records_not_supported",
            "this bundle classifies texts; records are for tabular bundles. "
            'Send {"texts": ["..."]}',
        )
    if "texts" in data and tabular:
        raise _invalid("texts_not_supported", f"this bundle classifies records; send {example}")
    if key not in data:
        raise _invalid("missing_field", f"the body has no {key!r}; send {example}")
    return _check_items(data[key], key, settings)


def check_records(problems: list[dict[str, Any]]) -> None:
    """A 422 naming the first record and field that do not fit the bundle's schema, with
    every problem listed (up to MAX_LISTED)."""
    if not problems:
        return
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise ApiError(
        422,
        first["code"],
        first["message"] + more,
        item=first["item"],
        problems=problems[:MAX_LISTED],
    )


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as err:  # bad syntax or encoding, or a number of over 4300 digits
        raise _invalid("invalid_json", f"the body is not valid JSON: {err}") from None
    except RecursionError:
        raise _invalid("invalid_json", "the body's JSON is nested too deeply") from None


def _check_items(items: Any, key: str, settings: ServeSettings) -> list[Any]:
    if not isinstance(items, list):
        raise _invalid("not_a_list", f"{key} must be a JSON list; got {_kind(items)}")
    if not items:
        raise _invalid("empty", f"{key} is empty; send at least one item")
    if len(items) > settings.max_texts:
        raise _invalid(
            "too_many_items",
            f"{len(items)} {key} in one request; the limit is {settings.max_texts}: "
            "split the request",
        )
    wanted = dict if key == "records" else str
    found = (_item_problem(i, item, key, wanted, settings) for i, item in enumerate(items))
    problems = [p for p in found if p is not None]
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ApiError(
            422,
            first["code"],
            first["message"] + more,
            item=first["item"],
            problems=problems[:MAX_LISTED],
        )
    return items


def _item_problem(
    i: int, item: Any, key: str, wanted: type, settings: ServeSettings
) -> dict[str, Any] | None:
    if not isinstance(item, wanted):
        noun = "an object" if wanted is dict else "a string"
        return {
            "item": i,
            "code": "not_an_object" if wanted is dict else "not_a_string",
            "message": f"{key}[{i}] is {_kind(item)}, not {noun}",
        }
    if isinstance(item, str) and len(item) > settings.max_chars:
        return {
            "item": i,
            "code": "text_too_long",
            "message": f"{key}[{i}] has {len(item)} characters; the limit is "
            f"{settings.max_chars}: shorten or split it",
        }
    if isinstance(item, str) and not _is_unicode(item):
        return {
            "item": i,
            "code": "invalid_text",
            "message": f"{key}[{i}] is not valid Unicode (it has a lone surrogate escape, "
            "such as \\ud800): send the text as UTF-8",
        }
    return None


def _is_unicode(text: str) -> bool:
    """JSON can smuggle in lone surrogates ("\\ud800"), which tokenizers cannot encode."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: Any) -> str:
    """JSON's names for what was sent: 'a number', 'null', 'an object'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def parse_reload(body: bytes, *, default: Path) -> Path:
    """`{"bundle": PATH}`, or an empty body to reload the bundle at the path being served."""
    if not body.strip():
        return default
    data = _json(body)
    if not isinstance(data, dict) or set(data) - {"bundle"}:
        raise _invalid("invalid_body", 'send {"bundle": "/path/to/bundle"} or an empty body')
    bundle = data.get("bundle")
    if bundle is None:
        return default
    if not isinstance(bundle, str) or not bundle:
        raise _invalid("invalid_body", f"bundle must be a path; got {_kind(bundle)}")
    return Path(bundle)
