"""MDS shards and indexes written without importing mosaicml-streaming.

`import streaming` pulls in torch, transformers and scikit-learn (~8 s a process): a prepare job's
driver and each of its Ray workers would pay that before the first byte is read. These write the same
bytes as streaming's MDSWriter (joint shards, `zstd` at its default level 3, xxh64 hashes) and
merge_index (tests/unit/data_pipeline/test_mds.py compares them); training reads them with streaming.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

ZSTD_LEVEL = 3  # streaming's default for "zstd"
_DTYPE_CODES = {"uint8", "int8", "uint16", "int16", "float16", "uint32", "int32", "float32", "uint64", "int64",
                "float64"}
_SHAPE_DTYPES = ((1 << 8, "uint8", 0), (1 << 16, "uint16", 1), (1 << 32, "uint32", 2), (1 << 64, "uint64", 3))


def _hash(algo: str, data: bytes) -> str:
    if algo != "xxh64":
        raise ValueError(f"unsupported shard hash {algo!r}")
    import xxhash

    return xxhash.xxh64(data).hexdigest()


def _encoder(encoding: str):
    if encoding == "bytes":
        return lambda value: value
    if encoding == "json":
        return lambda value: json.dumps(value.tolist() if isinstance(value, np.ndarray) else value).encode("utf-8")
    kind, _, dtype = encoding.partition(":")
    if kind != "ndarray" or dtype not in _DTYPE_CODES:
        raise ValueError(f"unsupported MDS encoding {encoding!r}")

    def encode(value: np.ndarray) -> bytes:  # static dtype, dynamic shape: [ndim<<2 | shape dtype][shape][values]
        if value.dtype != dtype or value.size == 0:
            raise ValueError(f"expected a non-empty {dtype} array, got {value.dtype} of shape {value.shape}")
        top = max(value.shape)
        _, shape_dtype, code = next(t for t in _SHAPE_DTYPES if top < t[0])
        return bytes([(value.ndim << 2) | code]) + np.asarray(value.shape, shape_dtype).tobytes() + value.tobytes()
    return encode


class MDSWriter:
    """streaming.MDSWriter for a local folder: write(sample) ..., finish()."""

    def __init__(self, out: str, columns: dict[str, str], compression: str | None, size_limit: int,
                 hashes: list[str]):
        self.folder = Path(out)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.names = sorted(columns)
        self.encoders = [_encoder(columns[name]) for name in self.names]
        self.compression, self.hashes, self.size_limit = compression, list(hashes), size_limit
        self.config = {"version": 2, "format": "mds", "compression": compression, "hashes": self.hashes,
                       "size_limit": size_limit, "column_names": self.names,
                       "column_encodings": [columns[name] for name in self.names],
                       "column_sizes": [None] * len(self.names)}
        self.config_data = json.dumps(self.config, sort_keys=True).encode("utf-8")
        self.shards: list[dict[str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self.samples: list[bytes] = []
        self.size = 4 + 4 + len(self.config_data)  # streaming's extra bytes per shard

    def write(self, sample: dict[str, Any]) -> None:
        data = [encode(sample[name]) for name, encode in zip(self.names, self.encoders)]
        encoded = np.array([len(d) for d in data], np.uint32).tobytes() + b"".join(data)
        if self.size_limit and self.size_limit < self.size + len(encoded) + 4:
            self._flush()
        self.samples.append(encoded)
        self.size += len(encoded) + 4

    def _info(self, data: bytes, basename: str) -> dict[str, Any]:
        return {"basename": basename, "bytes": len(data), "hashes": {a: _hash(a, data) for a in self.hashes}}

    def _flush(self) -> None:
        count = np.uint32(len(self.samples))
        offsets = np.array([0] + [len(s) for s in self.samples]).cumsum().astype(np.uint32)
        offsets += len(count.tobytes()) + len(offsets.tobytes()) + len(self.config_data)
        raw = count.tobytes() + offsets.tobytes() + self.config_data + b"".join(self.samples)
        raw_name = f"shard.{len(self.shards):05}.mds"
        raw_info, zip_info, data, name = self._info(raw, raw_name), None, raw, raw_name
        if self.compression:
            if self.compression != "zstd":
                raise ValueError(f"unsupported compression {self.compression!r}")
            import zstd

            data, name = zstd.compress(raw, ZSTD_LEVEL), f"{raw_name}.zstd"
            zip_info = self._info(data, name)
        (self.folder / name).write_bytes(data)
        self.shards.append({"samples": len(self.samples), "raw_data": raw_info, "zip_data": zip_info, **self.config})
        self._reset()

    def finish(self) -> None:
        if self.samples:
            self._flush()
        with open(self.folder / "index.json", "w") as out:
            json.dump({"version": 2, "shards": self.shards}, out, sort_keys=True)


def merge_index(indexes: list[str], out: str) -> None:
    """streaming.base.util.merge_index for local index files: one index.json in `out` listing every
    shard of the given indexes, each basename prefixed by its index's folder name."""
    shards = []
    for index in dict.fromkeys(i.rstrip("/").strip() for i in indexes):
        folder = os.path.basename(os.path.dirname(index))
        with open(index) as f:
            obj = json.load(f)
        for shard in obj["shards"]:
            for key in ("raw_data", "zip_data", "raw_meta", "zip_meta"):
                if shard.get(key):
                    shard[key]["basename"] = os.path.join(folder, shard[key]["basename"])
        shards += obj["shards"]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"version": 2, "shards": shards}, f)
