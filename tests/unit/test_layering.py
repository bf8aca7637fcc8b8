"""The import direction of the packages: schema and ops import no other project package; data_pipeline
only schema/ops; pretrain schema/ops/data_pipeline; launcher anything below it. Read with `ast`: imports at
module level and inside functions, relative ones resolved."""
from pathlib import Path

from import_graph import PACKAGES, imports_of, layering_violations, module_files

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_imports_only_downwards():
    files = module_files(ROOT)
    assert {m.split(".")[0] for m in files} == set(PACKAGES)
    assert len(files) > 50  # the checker saw the whole tree, not an empty folder
    problems = layering_violations(ROOT)
    assert not problems, "imports against the layering rule:\n" + "\n".join(problems)


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_reports_upward_imports_at_any_depth(tmp_path):
    _tree(tmp_path, {
        "schema/__init__.py": "",
        "schema/ok.py": "import json\nfrom pydantic import BaseModel\n",
        "ops/__init__.py": "from ops.kernels import f  # own package: fine\n",
        "ops/kernels.py": "def f():\n    from schema import ok  # a sibling below nothing: forbidden\n",
        "data_pipeline/__init__.py": "",
        "data_pipeline/job.py": "from schema import ok\nimport ops.kernels\n",
        "pretrain/__init__.py": "",
        "pretrain/training/__init__.py": "",
        "pretrain/training/trainer.py": ("from data_pipeline import job\n\n\nclass T:\n    def run(self):\n"
                                         "        if True:\n            import launcher.cli\n"),
        "pretrain/training/rel.py": "from ...launcher import cli\nfrom ..training import trainer\n",
        "launcher/__init__.py": "",
        "launcher/cli.py": "from pretrain.training import trainer\nfrom data_pipeline.job import x\n",
    })
    problems = layering_violations(tmp_path)
    assert sorted(problems) == sorted([
        "ops/kernels.py:2 imports schema.ok (in f())",
        "pretrain/training/trainer.py:7 imports launcher.cli (in run())",
        "pretrain/training/rel.py:1 imports launcher.cli",
    ])


def test_relative_imports_are_resolved(tmp_path):
    _tree(tmp_path, {"pretrain/__init__.py": "from . import a\n", "pretrain/a.py": "from .b import c\n",
                     "pretrain/sub/__init__.py": "from .. import a\nfrom ..sub import d\n"})
    known = set(module_files(tmp_path))
    assert [i.module for i in imports_of(tmp_path / "pretrain/__init__.py", "pretrain", known)] == ["pretrain.a"]
    assert [i.module for i in imports_of(tmp_path / "pretrain/a.py", "pretrain.a", known)] == ["pretrain.b"]
    assert [i.module for i in imports_of(tmp_path / "pretrain/sub/__init__.py", "pretrain.sub", known)] == [
        "pretrain.a", "pretrain.sub"]
