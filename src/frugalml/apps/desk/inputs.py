"""The desk's inputs: intents, out-of-scope examples, answer templates and a knowledge base.

Every file goes through frugalml's data layer, and every problem in every file is collected
before anything is raised: one error lists them all, each with its file, line and fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from frugalml.data import Dataset, read_table, to_dataset
from frugalml.errors import DataError, FrugalError, plural

HANDOFF = "handoff"  # an answer template of exactly this word: the intent is handed to a person
QUESTION_COLUMNS = ("question", "query", "q", "customer_message", "message", "text")
ANSWER_COLUMNS = ("answer", "reply", "response", "agent_reply", "resolution")


class DeskInputError(DataError):
    """One or more desk inputs cannot be used; lists every problem found in all of them."""


@dataclass(frozen=True)
class Entry:
    """One knowledge-base entry: a question (or a past ticket) and the answer a person gave."""

    question: str
    answer: str
    title: str = ""
    url: str = ""
    intent: str = ""

    def to_dict(self) -> dict[str, str]:
        # not dataclasses.asdict: its deep copy cost ~1 ms an entry, per reply's evidence
        return {f: getattr(self, f) for f in ENTRY_FIELDS}


ENTRY_FIELDS = tuple(f.name for f in fields(Entry))


@dataclass(frozen=True)
class DeskInputs:
    """Everything `build` needs, validated together."""

    intents: Dataset  # in-scope questions only
    oos: tuple[str, ...]  # out-of-scope examples (rows labelled `oos_label`, and/or --oos FILE)
    answers: dict[str, str | None]  # intent → template; None: hand the intent to a person
    knowledge: tuple[Entry, ...]
    notes: tuple[str, ...] = ()


def read_inputs(
    intents: str | Path | Dataset,
    *,
    answers: str | Path | dict[str, str],
    knowledge: str | Path | Sequence[Entry],
    oos: str | Path | Sequence[str] | None = None,
    oos_label: str = "oos",
    text_col: str | None = None,
    label_col: str | None = None,
) -> DeskInputs:
    """Read and check all inputs; raise one `DeskInputError` listing every problem."""
    problems: list[str] = []
    notes: list[str] = []
    dataset = _guard(problems, None, _read_intents, intents, text_col, label_col)
    dataset, oos_rows = _split_oos(dataset, oos_label) if dataset is not None else (None, ())
    extra_oos = _guard(problems, (), _read_oos, oos) if oos is not None else ()
    templates = _guard(problems, {}, _read_answers, answers)
    entries = _guard(problems, (), _read_knowledge, knowledge)
    if dataset is not None and templates is not None:
        problems += _answer_problems(dataset.labels, templates, answers, notes)
    if problems:
        raise DeskInputError(
            f"the desk's inputs have {plural(len(problems), 'problem')}:", problems
        )
    assert dataset is not None
    return DeskInputs(
        dataset, tuple(oos_rows) + tuple(extra_oos), templates, tuple(entries), tuple(notes)
    )


def _guard(problems: list[str], default: Any, read: Any, *args: Any) -> Any:
    """Run one reader; its user errors join `problems` so the other files are still read."""
    try:
        return read(*args)
    except FrugalError as err:
        problems.extend([err.summary, *err.problems] if err.problems else [err.summary])
        return default


def _read_intents(
    source: str | Path | Dataset, text_col: str | None, label_col: str | None
) -> Dataset:
    if isinstance(source, Dataset):
        return source
    table = read_table(source)
    return to_dataset(table, text_col=text_col, label_col=label_col).dataset


def _split_oos(dataset: Dataset, oos_label: str) -> tuple[Dataset, tuple[str, ...]]:
    """Rows labelled `oos_label` are out-of-scope examples, not an intent."""
    if oos_label not in dataset.labels:
        return dataset, ()
    k = dataset.labels.index(oos_label)
    oos = tuple(t for t, y in zip(dataset.texts, dataset.y, strict=True) if y == k)
    keep = [i for i, y in enumerate(dataset.y) if y != k]
    labels = [dataset.labels[int(dataset.y[i])] for i in keep]
    names = [name for name in dataset.labels if name != oos_label]
    inscope = Dataset.from_lists(
        [dataset.texts[i] for i in keep], labels, label_names=names, name=dataset.name
    )
    return inscope, oos


def _read_oos(source: str | Path | Sequence[str]) -> tuple[str, ...]:
    if not isinstance(source, str | Path):
        return tuple(source)
    table = read_table(source)
    frame = table.frame
    column = "text" if "text" in frame.columns else frame.columns[0]
    if len(frame.columns) > 1 and column != "text":
        raise DataError(
            f"{source}: out-of-scope examples need a 'text' column (found "
            f"{', '.join(map(str, frame.columns))})",
            ["name the column with the questions 'text'"],
        )
    texts = tuple(str(t).strip() for t in frame[column] if str(t).strip())
    if not texts:
        raise DataError(f"{source}: the out-of-scope file holds no texts")
    return texts


def _read_answers(source: str | Path | dict[str, str]) -> dict[str, str | None]:
    if isinstance(source, dict):
        raw = dict(source)
    elif Path(source).suffix.lower() in (".yaml", ".yml", ".json"):
        raw = _mapping_file(Path(source))
    else:
        raw = _answer_table(source)
    return {
        str(k).strip(): None if str(v).strip().lower() == HANDOFF else str(v).strip()
        for k, v in raw.items()
    }


def _mapping_file(path: Path) -> dict[str, str]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist", ["pass the answers file's path"]) from None
    except (ValueError, yaml.YAMLError) as err:
        raise DataError(f"{path} cannot be parsed ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise DataError(
            f"{path} must map each intent to its answer text",
            ["write it as `intent: answer` lines (`intent: handoff` for a person)"],
        )
    return {str(k): v for k, v in data.items()}


def _answer_table(source: str | Path) -> dict[str, str]:
    table = read_table(source)
    frame = table.frame
    missing = [c for c in ("intent", "answer") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: answers need the columns 'intent' and 'answer' (missing "
            f"{', '.join(missing)}; found {', '.join(map(str, frame.columns))})",
            ["rename the columns, or give a YAML file mapping intent: answer"],
        )
    problems, answers = [], {}
    for row, (intent, answer) in enumerate(zip(frame["intent"], frame["answer"], strict=True)):
        intent, answer = str(intent).strip(), str(answer).strip()
        if not intent or not answer or intent == "nan" or answer == "nan":
            problems.append(
                f"{source} {table.where(row)}: an empty intent or answer; write `handoff` "
                "as the answer to hand the intent to a person"
            )
        elif intent in answers:
            problems.append(f"{source} {table.where(row)}: intent '{intent}' has two answers")
        else:
            answers[intent] = answer
    if problems:
        raise DataError(f"{source}: {plural(len(problems), 'problem')} in the answers", problems)
    return answers


def _answer_problems(
    intents: Sequence[str],
    templates: dict[str, str | None],
    source: object,
    notes: list[str],
) -> list[str]:
    where = source if isinstance(source, str | Path) else "the answers"
    missing = [i for i in intents if i not in templates]
    unknown = sorted(set(templates) - set(intents))
    if unknown:
        notes.append(f"{where}: answers for unknown intents are ignored: {', '.join(unknown)}")
    if not missing:
        return []
    return [
        f"{where}: {plural(len(missing), 'intent')} without an answer: "
        f"{', '.join(missing[:10])}{' …' if len(missing) > 10 else ''}; add a row per intent "
        f"(answer `{HANDOFF}` to hand it to a person)"
    ]


def _read_knowledge(source: str | Path | Sequence[Entry]) -> tuple[Entry, ...]:
    entries = _knowledge_table(source) if isinstance(source, str | Path) else tuple(source)
    if not entries:
        raise DataError(
            f"the knowledge base {source if isinstance(source, str | Path) else ''} is empty",
            ["give a table with at least one question and answer (an FAQ or past tickets)"],
        )
    return entries


def _knowledge_table(source: str | Path) -> tuple[Entry, ...]:
    table = read_table(source)
    frame = table.frame
    columns = {str(c).lower(): c for c in frame.columns}
    question = next((columns[c] for c in QUESTION_COLUMNS if c in columns), None)
    answer = next((columns[c] for c in ANSWER_COLUMNS if c in columns), None)
    found = ", ".join(map(str, frame.columns))
    problems = []
    if question is None:
        problems.append(f"no question column (one of {', '.join(QUESTION_COLUMNS)}); found {found}")
    if answer is None:
        problems.append(f"no answer column (one of {', '.join(ANSWER_COLUMNS)}); found {found}")
    if problems:
        raise DataError(f"{source}: the knowledge base cannot be read", problems)
    optional = {name: columns.get(name) for name in ("title", "url", "intent")}
    entries = []
    for row in range(len(frame)):
        q, a = _cell(frame[question].iloc[row]), _cell(frame[answer].iloc[row])
        if not q or not a:
            problems.append(f"{table.where(row)}: an empty question or answer")
            continue
        rest = {k: _cell(frame[c].iloc[row]) if c is not None else "" for k, c in optional.items()}
        entries.append(Entry(q, a, **rest))
    if problems:
        raise DataError(
            f"{source}: {plural(len(problems), 'row')} of the knowledge base cannot be used",
            [*problems[:10], "fill them in or delete them"],
        )
    return tuple(entries)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return "" if text.lower() == "nan" else text
