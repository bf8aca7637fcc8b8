"""`wordpool verify DATA_DIR [--repair]`: every shard file against its index.json entry, and the accounts.

A shard is checked by what index.json says of it: present, of the recorded size, with the recorded hash
(prepare writes SHARD_HASH for every file; older data has none), and, compressed, decompressing to the
raw size and hash. The accounts: the samples the indexes list per split against stats.json, and the
units' markers against stats.json. `--repair` (data_pipeline.job.repair_units) re-runs only the units
that wrote a bad shard. No Ray here: training reads `shard_origin` to name a corrupt shard.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_pipeline.reader import dataset_dirs
from data_pipeline.shard_format import JOB_FILE, SPLITS, STATS_FILE, UNITS_DIR, read_stats


@dataclass(frozen=True)
class ShardProblem:
    file: Path
    split: str
    unit: int | None
    input: str | None
    problem: str

    def line(self) -> str:
        where = f"split {self.split}" + (f", unit {self.unit}" if self.unit is not None else "")
        source = f", written from {self.input}" if self.input else ""
        return f"{self.file} ({where}{source}): {self.problem}"


def data_root(dataset_dir: str | Path) -> Path:
    """The prepare output holding an MDS dataset folder (a split, or a split's length bucket)."""
    folder = Path(dataset_dir).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / STATS_FILE).is_file() or (candidate / JOB_FILE).is_file():
            return candidate
    return folder.parent


def shard_origin(dataset_dir: str | Path, basename: str, problem: str) -> ShardProblem:
    """Which split and prepare unit (and so which input file) wrote `basename` of `dataset_dir`."""
    folder = Path(dataset_dir).resolve()
    root = data_root(folder)
    split = folder.relative_to(root).parts[0] if folder != root else "?"
    first = basename.split("/", 1)[0]
    unit = int(first.removeprefix("unit-")) if first.startswith("unit-") and first[5:].isdigit() else None
    source = None
    marker = root / UNITS_DIR / f"{first}.json"
    if unit is not None and marker.is_file():
        summary = json.loads(marker.read_text())
        source, part = summary.get("path"), summary.get("part")
        if source and part:  # a part of a big input (data_pipeline/plan.py)
            source += f" ({part['kind'].replace('_', ' ')} {part['start']:,}-{part['stop']:,})"
    return ShardProblem(folder / basename, split, unit, source, problem)


def _hash_problem(info: dict[str, Any], data: bytes) -> str | None:
    """Which of index.json's hashes for this file `data` fails, if any."""
    from streaming.base.hashing import get_hash

    for algo, expected in (info.get("hashes") or {}).items():
        if get_hash(algo, data) != expected:
            return f"{algo} hash differs from index.json's"
    return None


def _check_file(folder: Path, info: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """The file's bytes, or the problem with it."""
    path = folder / info["basename"]
    if not path.is_file():
        return None, "missing"
    data = path.read_bytes()
    if len(data) != info["bytes"]:
        return None, f"{len(data):,} bytes, index.json says {info['bytes']:,}"
    problem = _hash_problem(info, data)
    return (None, problem) if problem else (data, None)


def check_shard(folder: Path, shard: dict[str, Any]) -> str | None:
    """The problem with one index.json entry's files, or None."""
    from streaming.base.compression import decompress

    raw, zipped = shard["raw_data"], shard.get("zip_data")
    if not zipped:
        return _check_file(folder, raw)[1]
    data, problem = _check_file(folder, zipped)
    if problem:
        return problem
    try:
        data = decompress(shard["compression"], data)
    except Exception as exc:  # the codec's own error: the file is not what was written
        return f"does not decompress ({type(exc).__name__}: {exc})"
    if len(data) != raw["bytes"]:
        return f"decompresses to {len(data):,} bytes, index.json says {raw['bytes']:,}"
    problem = _hash_problem(raw, data)
    return f"decompressed data: {problem}" if problem else None


def check_shards(data_dir: str | Path) -> tuple[list[ShardProblem], int]:
    """Every shard of every split: the problems found, and how many shard files were checked."""
    problems, checked = [], 0
    for split in SPLITS:
        for dataset in dataset_dirs(data_dir, split):
            index = dataset / "index.json"
            if not index.is_file():
                problems.append(ShardProblem(index, split, None, None, "missing"))
                continue
            for shard in json.loads(index.read_text())["shards"]:
                checked += 1
                problem = check_shard(dataset, shard)
                if problem:
                    name = (shard.get("zip_data") or shard["raw_data"])["basename"]
                    problems.append(shard_origin(dataset, name, problem))
    return problems, checked


def check_accounts(data_dir: str | Path) -> list[str]:
    """Where stats.json disagrees with the indexes or with the units' markers."""
    root = Path(data_dir)
    stats = read_stats(root)
    problems = []
    for split in SPLITS:
        listed = 0
        for dataset in dataset_dirs(root, split):
            index = dataset / "index.json"
            if index.is_file():
                listed += sum(s["samples"] for s in json.loads(index.read_text())["shards"])
        counted = stats["splits"][split].get("samples", 0)
        if listed != counted:
            problems.append(f"split {split}: the indexes list {listed:,} samples, stats.json counts {counted:,}")
    markers = [json.loads(m.read_text()) for m in sorted((root / UNITS_DIR).glob("unit-*[0-9].json"))]
    if len(markers) != stats["units"]:
        problems.append(f"{len(markers)} unit markers in {root / UNITS_DIR}, stats.json counts {stats['units']} units")
    for key in ("documents", "words", "tokens", "document_bytes", "rejected_bytes"):
        total = sum(m["counts"][s].get(key, 0) for m in markers for s in SPLITS)
        expected = sum(stats["splits"][s].get(key, 0) for s in SPLITS)
        if total != expected:
            problems.append(f"{key}: the unit markers add up to {total:,}, stats.json counts {expected:,}")
    return problems
