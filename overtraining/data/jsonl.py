"""Reading and checking a local SFT JSONL file (torch-free, so the CLI checks it up front).

One conversation per line: ``{"messages": [{"role": "system"|"user"|"assistant",
"content": "..."}, ...]}``, ending with an assistant turn.
"""

from __future__ import annotations

import json
from pathlib import Path

EXPECTED = "{'messages': [{'role': ..., 'content': ...}, ...]} ending with an assistant turn"


def read_jsonl(path: str) -> list[dict]:
    """Reads and checks every line of an SFT JSONL file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: one line naming ``file:line`` and what was expected, or an empty file.
    """
    file = Path(path).expanduser()
    if not path or not file.is_file():
        raise FileNotFoundError(f"sft_data.path={path!r} not found: pass sft_data.path=/abs/path/train.jsonl")
    rows = []
    for i, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"sft_data.path={file}:{i} is not JSON ({err.msg}): one {EXPECTED} per line") from None
        turns = row.get("messages") if isinstance(row, dict) else None
        if (
            not isinstance(turns, list)
            or not turns
            or any(not isinstance(t, dict) or not {"role", "content"} <= set(t) for t in turns)
            or turns[-1]["role"] != "assistant"
        ):
            raise ValueError(f"sft_data.path={file}:{i}: expected {EXPECTED}")
        rows.append(row)
    if not rows:
        raise ValueError(f"sft_data.path={file} has no examples: write one {EXPECTED} per line")
    return rows
