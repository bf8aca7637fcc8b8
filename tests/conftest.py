"""Fixtures shared by tests/unit and tests/integration. Nothing here reads outside the repository: English
text comes from the project's built-in corpus (CPython's help topics and docstrings), other scripts from
tests/texts.py."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # helper modules (texts, cli_helpers, ...) import by name from any folder
    sys.path.insert(0, str(TESTS))

from texts import English  # noqa: E402

SHARDS_LINES = 2000  # English sentence-like lines of the session's shards (~120 KB)


@pytest.fixture(scope="session")
def english(tmp_path_factory) -> English:
    """The built-in English corpus, written once per session; tests take slices of it."""
    from data_pipeline.builtin_corpus import write_builtin_corpus

    folder = tmp_path_factory.mktemp("builtin_corpus")
    return English(folder, write_builtin_corpus(folder))


@pytest.fixture(scope="session")
def english_lines_file(english, tmp_path_factory) -> Path:
    """SHARDS_LINES lines of the built-in corpus in one file (a document per line with doc_split=line)."""
    return english.write_lines(tmp_path_factory.mktemp("english_lines") / "lines.txt", SHARDS_LINES)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole test session (starting one costs seconds)."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shards(english_lines_file, tmp_path_factory):
    """Small word shards (English lines of the built-in corpus) shared by every training test in the session.
    Prepared in this process without Ray (cli_helpers.prepare_without_ray): starting Ray costs tens of
    seconds on a loaded machine, and the Ray job itself is tested in integration/test_prepare*.py."""
    from schema import DataConfig
    from cli_helpers import prepare_without_ray

    out = tmp_path_factory.mktemp("shards")
    prepare_without_ray(DataConfig(inputs=[str(english_lines_file)], output=str(out), doc_split="line",
                                   max_word_bytes=16, words_per_sample=32, val_fraction=0.1))
    return out
