"""A model's own word-piece counts (special tokens included, nothing truncated), without torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from semsearch.errors import ModelError


class ModelTokenizer:
    """Counts a model's own word-pieces (special tokens included, nothing truncated). No torch."""

    def __init__(self, model_dir: Path, document_prompt: str = "") -> None:
        from tokenizers import Tokenizer

        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"{path} is missing: cannot count the model's tokens")
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.no_truncation()
        self._prompt = document_prompt

    def count(self, text: str) -> int:
        return len(self._tok.encode(self._prompt + text).ids)

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self._tok.encode_batch([self._prompt + t for t in texts])]
