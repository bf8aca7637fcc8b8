"""`wordpool export --hf`: the export folder also loads with Hugging Face transformers.

    AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)

Design:
- One folder, one weights file. `model.safetensors` keeps the wordpool names (`load_exported` reads it
  unchanged); the HF model holds the wordpool model under `base_model_prefix`, and transformers adds
  that prefix when it loads a checkpoint without it (what loading a base-model checkpoint into a
  model with a head does), so nothing is stored twice.
- config.json keeps the run's config and the `export` block, plus the keys transformers reads
  (`model_type`, `architectures`, `auto_map`) and `wordpool_hf` (the validated model section and the
  splitter's settings: the HF side does not re-derive config values). The export block lists these
  keys (`hf_keys`) so that `read_export_config` drops them.
- The model's code is vendored: the wordpool sources in SOURCES are copied flat into the folder with
  their project imports rewritten to relative ones (`flat_imports`), beside the two templates in
  hf_remote_code/. transformers finds a module's relative imports by a regex (`from .X import ...`
  only) and, for a local folder, copies only the ones the loaded file names directly: the modeling
  template names every vendored file, which `add_hf_files` checks. So the loaded model imports
  torch, pydantic, numpy, hat_splitter and tokenizers, and none of wordpool's packages.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import shutil
from pathlib import Path
from typing import Callable, Mapping

from schema import WordpoolConfig
from pretrain.inference.export import CONFIG, EXPORT_KEY

# project module -> its file's stem in the export: every source the HF model runs, and only those
SOURCES: dict[str, str] = {
    "schema.base": "schema_base",
    "schema.model": "schema_model",
    "ops._dispatch": "_dispatch",
    "ops.cross_entropy": "cross_entropy",
    "ops._cross_entropy_triton": "_cross_entropy_triton",  # CUDA loss only; imported lazily
    "ops.varlen_attention": "varlen_attention",
    "data_pipeline.segment": "segment",
    **{f"pretrain.models.{m}": m for m in (
        "byte_stream", "flops", "hash_ngrams", "layers", "packed_layout", "pooling", "sampling", "symbols",
        "token_lm", "word_generation", "word_pooled")},
}
PROJECT = ("schema", "ops", "data_pipeline", "pretrain", "launcher")
TEMPLATES = Path(__file__).parent / "hf_remote_code"
CONFIG_CODE, MODELING_CODE = "configuration_wordpool.py", "modeling_wordpool.py"
TOKENIZER = "tokenizer.json"  # the BPE baseline's tokenizer (data.output's)
TOKEN_BYTES = "token_bytes.json"  # baselines: token id -> its text bytes (hex; null = end of document)
HF_BLOCK = "wordpool_hf"
AUTO_MAP = {"AutoConfig": "configuration_wordpool.WordpoolHFConfig",
            "AutoModelForCausalLM": "modeling_wordpool.WordpoolForCausalLM"}


def relative_imports(source: str) -> set[str]:
    """The modules transformers copies beside a remote-code file (its regexes, dynamic_module_utils)."""
    found = re.findall(r"^\s*import\s+\.(\S+)\s*$", source, flags=re.MULTILINE)
    return set(found + re.findall(r"^\s*from\s+\.(\S+)\s+import", source, flags=re.MULTILINE))


def defined_in(package: str, name: str) -> tuple[str, bool]:
    """(the module that defines `package.name`, whether that name is the module itself): a package
    re-exports its modules' classes and functions, and such a function may shadow its module's name
    (`ops.varlen_attention`)."""
    obj = getattr(importlib.import_module(package), name, None)
    if obj is None:  # a submodule not imported yet
        obj = importlib.import_module(f"{package}.{name}")
    if inspect.ismodule(obj):
        return obj.__name__, True
    module = getattr(obj, "__module__", None)
    if not module:
        raise ValueError(f"cannot tell which module defines {package}.{name}: import it from that module")
    return module, False


def _aliased(name: str, asname: str | None) -> str:
    return name if not asname or asname == name else f"{name} as {asname}"


def flat_imports(source: str, vendored: Mapping[str, str] = SOURCES,
                 resolve: Callable[[str, str], tuple[str, bool]] = defined_in, project=PROJECT) -> str:
    """`source` with every import of a project module rewritten to the flat relative form transformers
    follows: `from pkg.mod import x` -> `from .<stem> import x`; `from pkg import mod` -> `from . import
    <stem> as mod`; `from pkg import x` (re-exported) -> `from .<stem of x's module> import x`.
    A project import under `if TYPE_CHECKING:` of a module not vendored becomes `pass`; anywhere else
    it is an error, so the vendored files are closed under import."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []  # (first line, last line, replacement), 1-based inclusive

    def stem_of(module: str, lineno: int) -> str:
        if module not in vendored:
            raise ValueError(f"line {lineno}: imports {module}, which is not among the vendored sources")
        return vendored[module]

    def rewrite(node: ast.Import | ast.ImportFrom, type_checking: bool) -> list[str] | None:
        if isinstance(node, ast.ImportFrom) and node.level:
            raise ValueError(f"line {node.lineno}: relative import in a project source")
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if not any(m.split(".")[0] in project for m in modules):
            return None
        if type_checking and not all(m in vendored for m in modules):
            return ["pass"]
        if isinstance(node, ast.Import):
            if any(not a.asname for a in node.names):
                raise ValueError(f"line {node.lineno}: `import {modules[0]}` without `as`: use `from ... import`")
            return [f"from . import {_aliased(stem_of(a.name, node.lineno), a.asname)}" for a in node.names]
        if node.module in vendored:
            return [f"from .{vendored[node.module]} import "
                    + ", ".join(_aliased(a.name, a.asname) for a in node.names)]
        out = []
        for a in node.names:
            module, is_module = resolve(node.module, a.name)
            stem = stem_of(module, node.lineno)
            out.append(f"from . import {_aliased(stem, a.asname or a.name)}" if is_module
                       else f"from .{stem} import {_aliased(a.name, a.asname)}")
        return out

    def is_type_checking(test: ast.expr) -> bool:
        return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")

    def visit(nodes, type_checking: bool) -> None:
        for child in nodes:
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                new = rewrite(child, type_checking)
                if new is not None:
                    indent = " " * child.col_offset
                    edits.append((child.lineno, child.end_lineno, "".join(f"{indent}{s}\n" for s in new)))
            elif isinstance(child, ast.If) and is_type_checking(child.test):
                visit(child.body, True)  # its `else:` runs
                visit(child.orelse, type_checking)
            else:
                visit(ast.iter_child_nodes(child), type_checking)

    visit(tree.body, False)
    for first, last, text in sorted(edits, reverse=True):
        lines[first - 1:last] = [text]
    return "".join(lines)


def _token_bytes(cfg: WordpoolConfig, tokenizer_json: str | None) -> list[bytes | None]:
    from data_pipeline.shard_format import BYTE_EOD
    from pretrain.evaluation.word_scoring import bpe_byte_table

    if cfg.model.kind == "bytes":
        return [bytes([i]) for i in range(BYTE_EOD)] + [None]
    return bpe_byte_table(tokenizer_json)


def add_hf_files(folder: str | Path, cfg: WordpoolConfig) -> None:
    """Make an export folder (model.safetensors + config.json written) loadable by transformers: the
    vendored sources, the two templates, config.json's HF keys; for the baselines the token table, and
    for BPE its tokenizer.json (from data.output)."""
    folder = Path(folder)
    modeling = (TEMPLATES / MODELING_CODE).read_text()
    unnamed = set(SOURCES.values()) - relative_imports(modeling)
    if unnamed:  # transformers would not copy them into its module cache
        raise RuntimeError(f"{TEMPLATES / MODELING_CODE} must import every vendored file; missing: {sorted(unnamed)}")
    for module, stem in SOURCES.items():
        path = Path(inspect.getfile(importlib.import_module(module)))
        try:
            text = flat_imports(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        (folder / f"{stem}.py").write_text(text)
    shutil.copyfile(TEMPLATES / CONFIG_CODE, folder / CONFIG_CODE)
    shutil.copyfile(TEMPLATES / MODELING_CODE, folder / MODELING_CODE)

    tokenizer_json = None
    if cfg.model.kind == "bpe":
        from data_pipeline.bpe import TOKENIZER_FILE
        from data_pipeline.data_cache import local_root

        source = local_root(cfg.data.output) / TOKENIZER_FILE  # fetched to this node when data.output is a URL
        if not source.is_file():
            raise FileNotFoundError(f"the BPE model's tokenizer {source} (data.output) is missing: --hf ships it")
        tokenizer_json = source.read_text()
        (folder / TOKENIZER).write_text(tokenizer_json)
    if cfg.model.kind != "word_pooled":
        table = [None if b is None else b.hex() for b in _token_bytes(cfg, tokenizer_json)]
        (folder / TOKEN_BYTES).write_text(json.dumps(table) + "\n")

    config_path = folder / CONFIG
    config = json.loads(config_path.read_text())
    hf = {
        "model_type": "wordpool",
        "architectures": ["WordpoolForCausalLM"],
        "auto_map": AUTO_MAP,
        "torch_dtype": "float32",
        HF_BLOCK: {"model": cfg.model.model_dump(mode="json"), "split_digits": cfg.data.split_digits,
                   "tokenizer_file": TOKENIZER if tokenizer_json else None,
                   "token_bytes_file": TOKEN_BYTES if cfg.model.kind != "word_pooled" else None},
    }
    clash = set(hf) & set(config)
    if clash:
        raise ValueError(f"{config_path} already has {sorted(clash)}")
    config[EXPORT_KEY]["hf_keys"] = sorted(hf)
    config_path.write_text(json.dumps({**config, **hf}, indent=1) + "\n")
