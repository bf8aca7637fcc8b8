"""The two files `wordpool export --hf` copies into an export folder, for transformers' remote code
(`trust_remote_code=True`). Never imported here: their relative imports name the vendored sources that
sit beside them in the export (pretrain/inference/hf_export.py)."""
