"""Training checkpoints that survive a kill at any moment.

Every file is written atomically: into a temporary file in the same directory,
flushed and fsync'ed, then moved over the old one with ``os.replace`` (and the
directory fsync'ed), so a reader only ever sees the previous complete file or
the new complete file.

A checkpoint is one ``.npz``: the model's weights under ``model/<param>``, the
optimizer's state arrays under ``optim/<param>/<slot>``, and a JSON document
``__meta__`` with the number of finished epochs, the optimizer's scalars, the
history so far and whatever the caller adds (the command line's arguments).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

FORMAT_VERSION = 1


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    If the block raises, ``path`` is untouched and the temporary file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (not possible on every platform)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, document: Any) -> None:
    write_bytes_atomic(path, (json.dumps(document, indent=2) + "\n").encode())


def save_model_atomic(model: Any, path: str | os.PathLike) -> None:
    """``model.save(path)`` (architecture + weights .npz), atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)


@dataclass
class Checkpoint:
    """What a checkpoint restores: finished epochs, weights, optimizer state, metadata."""

    epoch: int  # epochs finished; training resumes at this epoch index
    model_state: dict[str, np.ndarray]
    optimizer_state: dict[str, Any]
    history: dict[str, list]
    meta: dict[str, Any]


def save_checkpoint(
    path: str | os.PathLike,
    model: Any,
    optimizer: Any,
    epoch: int,
    history: dict[str, list],
    meta: dict[str, Any] | None = None,
) -> None:
    """Write model + optimizer state after ``epoch`` finished epochs, atomically."""
    opt = optimizer.state_dict()
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    for param, slots in opt["state"].items():
        for slot, value in slots.items():
            arrays[f"optim/{param}/{slot}"] = np.asarray(value)
    document = {
        "format": FORMAT_VERSION,
        "epoch": int(epoch),
        "optimizer": {k: v for k, v in opt.items() if k != "state"},
        "history": history,
        "meta": meta or {},
    }
    arrays["__meta__"] = np.array(json.dumps(document))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint."""
    with np.load(path, allow_pickle=False) as data:
        if "__meta__" not in data.files:
            raise ValueError(f"{path} is not a dualconv checkpoint (no __meta__)")
        document = json.loads(str(data["__meta__"]))
        arrays = {k: data[k] for k in data.files if k != "__meta__"}
    if document.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {document.get('format')!r}, expected {FORMAT_VERSION}")
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    state: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("optim/"):
            _, param, slot = key.split("/", 2)
            state.setdefault(param, {})[slot] = value
    optimizer_state = dict(document["optimizer"], state=state)
    return Checkpoint(document["epoch"], model_state, optimizer_state, document["history"], document["meta"])
