"""The desk's embedded demo: answer templates for the 14 demo intents and a 42-entry bank FAQ,
written by the frugalml authors (see demo/README.md)."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).parent / "demo"
DEMO_ANSWERS = DEMO_DIR / "answers.csv"
DEMO_FAQ = DEMO_DIR / "faq.csv"
# Shown by `frugalml desk demo`: template answers, knowledge answers and hand-offs.
DEMO_QUESTIONS = (
    "my card still hasn't arrived after two weeks",
    "I think someone stole my card on the train",
    "where do I find my IBAN?",
    "are you open on Saturday?",
    "can you recommend a good pizza place near me",
    "Tell me a joke",
)
