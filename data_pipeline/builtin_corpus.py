"""A built-in corpus of real English prose that every CPython installation carries: the reference
documentation topics shipped for `help()` (pydoc_data) plus the standard library's docstrings.
Used by `wordpool quickstart`; needs no download and nothing from ../shared."""
from __future__ import annotations

import contextlib
import importlib
import io
import sys
import warnings
from pathlib import Path

_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "pydoc_data", "lib2to3"}


def _docstrings() -> list[str]:
    docs = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in _SKIP:
            continue
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception:  # platform-specific or optional modules
            continue
        parts = [module.__doc__] if isinstance(module.__doc__, str) else []
        for obj in vars(module).values():
            doc = getattr(obj, "__doc__", None)
            if getattr(obj, "__module__", None) == name and isinstance(doc, str):
                parts.append(doc)
        text = "\n\n".join(p.strip() for p in parts if len(p.strip()) > 40)
        if text:
            docs.append(f"Module {name}\n\n{text}\n")
    return docs


def help_topics() -> str:
    """The reference documentation topics of `help()`, paragraph-separated."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k].strip() + "\n" for k in sorted(topics))


def prose_paragraphs(text: str, min_chars: int = 200) -> list[str]:
    """Paragraphs of running prose (no indented code, no grammar rules), each joined into one line."""
    out = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if any(line.startswith(" ") or "::=" in line or line.startswith(("*", "=", "-")) for line in lines):
            continue
        paragraph = " ".join(line.strip() for line in lines)
        if len(paragraph) >= min_chars:
            out.append(paragraph)
    return out


def write_builtin_corpus(folder: str | Path, min_bytes: int = 500_000) -> list[Path]:
    """Writes topics.txt and docstrings.txt (paragraph-separated) into `folder`; returns the files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "python_help_topics.txt": help_topics(),
        "python_stdlib_docstrings.txt": "\n\n".join(_docstrings()),
    }
    paths = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    total = sum(p.stat().st_size for p in paths)
    if total < min_bytes:
        raise RuntimeError(f"built-in corpus has only {total} bytes (< {min_bytes}): this Python lacks pydoc_data?")
    return paths
