"""What a process imports: `import frugalml` and serving an ONNX bundle stay clear of the
training stack, the data tools and the ladder, which every serve worker would otherwise pay."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import frugalml
from frugalml.data.split import Splits

# Never needed to load and predict with an exported bundle.
HEAVY = ("torch", "transformers", "pandas", "pyarrow", "sklearn", "frugalml.ladder")
HEAVY += ("frugalml.ship", "frugalml.api", "frugalml.cli")

_REPORT = """
import json, sys
print(json.dumps({"modules": sorted(sys.modules), "result": result}))
"""


def in_fresh_python(code: str, *args: str) -> dict[str, object]:
    """Run `code` (which sets `result`) in a new interpreter; its modules and its result."""
    done = subprocess.run(
        [sys.executable, "-c", code + _REPORT, *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return report


def heavy(modules: object) -> list[str]:
    assert isinstance(modules, list)
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


@pytest.fixture(scope="module")
def onnx_bundles(
    demo_splits: Splits, tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """A frozen probe on the tiny BERT exported as fp32 and int8 ONNX, and a TF-IDF model
    exported as ONNX n-grams: every kind of bundle that serves without torch."""
    from frugalml.ship.compress import compress

    root = tmp_path_factory.mktemp("lazy")
    probe = {"backbone": str(tiny_backbone), "cache": False}
    run = frugalml.fit(
        demo_splits.train,
        out=root / "probe",
        strategies=["frozen_probe"],
        options={"frozen_probe": probe},
        ship="none",
    )
    source = run.run_dir / "candidates" / "frozen_probe"
    steps = root / "steps"  # every step's bundle: the fp32 export, then int8
    # The random tiny encoder's accuracy is no concern here: accept int8 whatever it loses.
    compress(
        source,
        demo_splits.train,
        demo_splits.val,
        root / "shipped",
        to="int8",
        max_drop=100.0,
        keep_steps=steps,
    )
    tfidf = frugalml.fit(demo_splits.train, out=root / "tfidf", strategies=["tfidf"])
    return {"int8": steps / "int8", "fp32": steps / "onnx", "tfidf": tfidf.bundle.path}


@pytest.mark.parametrize("module", ["frugalml", "frugalml.bundle", "frugalml.data"])
def test_importing_the_package_imports_no_heavy_module(module: str) -> None:
    report = in_fresh_python(f"import {module}\nresult = None")
    assert heavy(report["modules"]) == []


def test_import_frugalml_imports_nothing_else_of_the_package() -> None:
    report = in_fresh_python("import frugalml\nresult = None")
    modules = report["modules"]
    assert isinstance(modules, list)
    assert [m for m in modules if m.startswith("frugalml")] == ["frugalml", "frugalml._lazy"]


@pytest.mark.parametrize(
    ("kind", "precision"), [("int8", "int8"), ("fp32", "fp32"), ("tfidf", "fp32")]
)
def test_an_onnx_bundle_loads_and_predicts_without_heavy_modules(
    kind: str, precision: str, onnx_bundles: dict[str, Path], demo_splits: Splits
) -> None:
    bundle = onnx_bundles[kind]
    spec = frugalml.load(bundle).manifest.predictor
    assert (spec["format"], spec["precision"]) == ("onnx", precision)
    texts = list(demo_splits.val.texts[:16])
    code = (
        "import json, sys, frugalml\n"
        "bundle = frugalml.load(sys.argv[1])\n"
        "result = bundle.predict_proba(json.loads(sys.argv[2])).argmax(1).tolist()\n"
    )
    report = in_fresh_python(code, str(bundle), json.dumps(texts))
    assert heavy(report["modules"]) == []
    assert report["result"] == frugalml.load(bundle).predict_proba(texts).argmax(1).tolist()


def test_lazy_exports_are_the_modules_own_objects() -> None:
    import frugalml.data
    from frugalml.api import fit
    from frugalml.bundle import load
    from frugalml.data.split import stratified_split

    assert frugalml.fit is fit and frugalml.load is load
    assert frugalml.data.stratified_split is stratified_split
    assert {"fit", "load", "Bundle", "__version__"} <= set(dir(frugalml))
    with pytest.raises(AttributeError, match="has no attribute 'fitt'"):
        frugalml.fitt  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'read_tables'"):
        frugalml.data.read_tables  # noqa: B018


def test_the_registry_imports_a_rung_on_first_use_only() -> None:
    code = (
        "from frugalml.strategies import get_strategy, strategy_names\n"
        "get_strategy('tfidf')\n"
        "import sys\n"
        "first = sorted(m for m in sys.modules if m.startswith('frugalml.strategies.'))\n"
        "result = [first, strategy_names()]\n"
    )
    first, names = in_fresh_python(code)["result"]  # type: ignore[misc]
    assert first == ["frugalml.strategies.base", "frugalml.strategies.tfidf"]
    # the credit app's tabular rungs are built-in names too, cheapest first among text ones
    text = ["tfidf", "scorecard", "frozen_probe", "lightgbm", "hybrid", "top_layers", "setfit",
            "lora", "full"]  # fmt: skip
    rungs = ["popularity", "item_knn", "ease", "als", "content", "lambdarank", "two_tower"]
    assert names == [*text, *rungs]  # then interactions


def test_a_built_in_name_cannot_be_taken_before_its_rung_is_imported() -> None:
    code = (
        "from typing import Literal\n"
        "from frugalml.strategies.base import StrategyConfig, register_strategy\n"
        "class Config(StrategyConfig):\n"
        "    kind: Literal['lora'] = 'lora'\n"
        "class MyLora:\n"
        "    pass\n"
        "try:\n"
        "    register_strategy('lora', config=Config, predictor=object, cost_rank=0)(MyLora)\n"
        "    result = 'registered'\n"
        "except ValueError as err:\n"
        "    result = str(err)\n"
    )
    assert in_fresh_python(code)["result"] == "a strategy named 'lora' is already registered"


def pyproject_version() -> str:
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    found = re.search(r'^version = "([^"]+)"', text, re.MULTILINE)
    assert found
    return found.group(1)


def test_the_version_is_pyprojects_installed_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    import frugalml._version

    assert frugalml.__version__ == pyproject_version()  # else: reinstall, metadata is stale

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(frugalml._version.metadata, "version", not_installed)
    assert frugalml._version._version() == pyproject_version()
