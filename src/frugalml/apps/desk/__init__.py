"""The customer-service desk: intents, out-of-scope detection, answers from templates and a
knowledge base, and hand-off to a person; built on the ladder.

    desk = frugalml.apps.desk.builder("intents.csv", answers="answers.csv",
                                    knowledge="faq.csv", out="desk")
    frugalml.apps.desk.load("desk").ask(["my card never arrived"])[0].route

Names are imported on first use: the server imports `serving` alone.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frugalml.apps.desk.builder import BuildResult, Goals, build
    from frugalml.apps.desk.demo import DEMO_ANSWERS, DEMO_FAQ
    from frugalml.apps.desk.desk import Desk, Reply, Thresholds, load
    from frugalml.apps.desk.inputs import DeskInputError, Entry
else:
    from frugalml._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "BuildResult": "frugalml.apps.desk.builder",
            "DEMO_ANSWERS": "frugalml.apps.desk.demo",
            "DEMO_FAQ": "frugalml.apps.desk.demo",
            "Desk": "frugalml.apps.desk.desk",
            "DeskInputError": "frugalml.apps.desk.inputs",
            "Entry": "frugalml.apps.desk.inputs",
            "Goals": "frugalml.apps.desk.builder",
            "Reply": "frugalml.apps.desk.desk",
            "Thresholds": "frugalml.apps.desk.desk",
            "build": "frugalml.apps.desk.builder",
            "load": "frugalml.apps.desk.desk",
        },
    )

__all__ = [
    "DEMO_ANSWERS",
    "DEMO_FAQ",
    "BuildResult",
    "Desk",
    "DeskInputError",
    "Entry",
    "Goals",
    "Reply",
    "Thresholds",
    "build",
    "load",
]
