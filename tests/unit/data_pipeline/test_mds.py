"""data_pipeline/mds.py writes the very bytes of mosaicml-streaming's MDSWriter and merge_index."""
import json

import numpy as np
import pytest

from data_pipeline import mds


def _samples(n, rng):
    for i in range(n):
        k = int(rng.integers(1, 400))
        yield {"bytes": rng.bytes(k), "word_lens": rng.integers(0, 9, k).astype(np.uint32),
               "tokens": rng.integers(0, 300, k + (70_000 if i == 3 else 0)).astype(np.uint16),
               "docs": [["src.txt", i, 10 * i, 0, 0, k, True]]}


@pytest.mark.parametrize("compression", ["zstd", None])
def test_same_bytes_as_streaming(tmp_path, compression):
    from streaming import MDSWriter
    from streaming.base.util import merge_index

    columns = {"bytes": "bytes", "word_lens": "ndarray:uint32", "tokens": "ndarray:uint16", "docs": "json"}
    trees = []
    for name, writer_class in (("ours", mds.MDSWriter), ("streaming", MDSWriter)):
        root = tmp_path / name
        indexes = []
        for unit in range(2):
            folder = root / "train" / f"unit-{unit:05d}"
            writer = writer_class(out=str(folder), columns=columns, compression=compression, size_limit=1 << 16,
                                  hashes=["xxh64"])
            for sample in _samples(40, np.random.default_rng(unit)):
                writer.write(sample)
            writer.finish()
            indexes.append(str(folder / "index.json"))
        if name == "ours":
            mds.merge_index(indexes, str(root / "train"))
        else:
            merge_index(indexes, str(root / "train"), keep_local=True, download_timeout=60)
        trees.append({p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()})
    assert trees[0] == trees[1]
    index = json.loads(trees[0]["train/index.json"])
    assert len(index["shards"]) > 2 and index["shards"][0]["raw_data"]["basename"].startswith("unit-00000/")
