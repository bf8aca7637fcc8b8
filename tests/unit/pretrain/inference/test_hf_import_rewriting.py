"""`export --hf`'s import rewriting: project imports -> the flat relative form transformers follows."""
import ast
import textwrap

import pytest

from pretrain.inference.hf_export import MODELING_CODE, SOURCES, TEMPLATES, flat_imports, relative_imports

VENDORED = {"pkg.mod": "mod", "pkg.sub.deep": "deep", "pkg.fn_mod": "fn_mod", "schema.model": "schema_model"}
# (package, name) -> (defining module, is a module): `fn_mod` is also a function that shadows its module
RESOLVED = {("pkg", "Thing"): ("pkg.mod", False), ("pkg", "fn_mod"): ("pkg.fn_mod", False),
            ("pkg.sub", "deep"): ("pkg.sub.deep", True), ("schema", "ModelConfig"): ("schema.model", False)}


def _flat(source: str) -> str:
    return flat_imports(textwrap.dedent(source), VENDORED, lambda p, n: RESOLVED.get((p, n), (p, False)),
                        project=("pkg", "schema"))


def test_project_imports_become_flat_relative_ones():
    out = _flat("""\
        from __future__ import annotations
        import torch
        from typing import TYPE_CHECKING
        from pkg.mod import a, b as c
        from pkg import Thing, fn_mod
        from pkg.sub import deep
        import pkg.mod as m
        from schema import ModelConfig
        from pkg.sub.deep import (
            x,
            y,
        )

        if TYPE_CHECKING:
            from pkg.unvendored import Hint
        else:
            from pkg.mod import Hint


        def f():
            from pkg.sub import deep as d
            return d
        """)
    assert out == textwrap.dedent("""\
        from __future__ import annotations
        import torch
        from typing import TYPE_CHECKING
        from .mod import a, b as c
        from .mod import Thing
        from .fn_mod import fn_mod
        from . import deep
        from . import mod as m
        from .schema_model import ModelConfig
        from .deep import x, y

        if TYPE_CHECKING:
            pass
        else:
            from .mod import Hint


        def f():
            from . import deep as d
            return d
        """)
    ast.parse(out)
    assert relative_imports(out) == {"mod", "fn_mod", "schema_model", "deep"}


@pytest.mark.parametrize("line, error", [
    ("from pkg.unvendored import x\n", "pkg.unvendored, which is not among the vendored sources"),
    ("import pkg.mod\n", "without `as`"),
    ("from .mod import x\n", "relative import"),
])
def test_what_cannot_be_vendored_is_refused(line, error):
    with pytest.raises(ValueError, match=error):
        _flat(line)


def test_every_vendored_source_rewrites_and_the_template_names_it():
    """A new project import in a model file must be vendored too (SOURCES), and named by the modeling
    template: for a local folder transformers copies only the files that one imports directly."""
    import importlib
    import inspect
    from pathlib import Path

    for module in SOURCES:
        out = flat_imports(Path(inspect.getfile(importlib.import_module(module))).read_text())
        tree = ast.parse(out)
        absolute = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
        absolute += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in absolute if m.split(".")[0] in ("schema", "ops", "data_pipeline", "pretrain")], module
        assert relative_imports(out) <= set(SOURCES.values()), module
    assert set(SOURCES.values()) <= relative_imports((TEMPLATES / MODELING_CODE).read_text())
