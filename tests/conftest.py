import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"


@pytest.fixture(scope="session")
def corpora() -> Path:
    if not CORPORA.is_dir():
        pytest.skip(f"shared corpora not found at {CORPORA}")
    return CORPORA


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
def shards(ray_cluster, corpora, tmp_path_factory):
    """Small word shards (English UD sentences) shared by every training test in the session."""
    from schema import DataConfig
    from data_pipeline.job import run_prepare

    out = tmp_path_factory.mktemp("shards")
    run_prepare(DataConfig(inputs=[str(corpora / "ud" / "en_ewt-dev.txt")], output=str(out), doc_split="line",
                           max_word_bytes=16, words_per_sample=32, val_fraction=0.1))
    return out
