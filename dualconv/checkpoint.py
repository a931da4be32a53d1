"""Every save and load of dualconv: model files, training checkpoints, JSON documents.

A **model file** (``Sequential.save`` / ``Sequential.load``, in model.py, through
``write_npz`` / ``read_npz``) is one ``.npz``: the weights under their parameter names
and the architecture as a JSON document ``__config__`` (MODEL_KEY). A **checkpoint** (``save_checkpoint`` / ``load_checkpoint``) is one
``.npz`` holding a ``Trainer.state_dict()``: the weights under ``model/<param>``,
the optimizer's state arrays under ``optim/<param>/<slot>``, and a JSON document
``__meta__`` with the number of finished epochs, the optimizer's scalars, the
schedule's position, the history so far and whatever the caller adds (the command
line's settings).

Every file is written atomically: into a temporary file in the same directory
(created with the user's normal file mode, as umask allows), flushed and fsync'ed,
then moved over the old one with ``os.replace`` (and the directory fsync'ed), so a
reader only ever sees the previous complete file or the new complete file.

Reading a file that is not what it should be (empty, truncated, a PNG, a
checkpoint where a model is expected) raises ValueError naming the file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

FORMAT_VERSION = 1
MODEL_KEY = "__config__"
CHECKPOINT_KEY = "__meta__"


# -- atomic writes ---------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    If the block raises, ``path`` is untouched and the temporary file removed. A ``path``
    that exists as anything but a regular file (a device such as /dev/full, a pipe, a
    socket) is refused with OSError: the rename would replace it.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise OSError(errno.EEXIST, "it exists and is not a regular file, which writing would replace",
                      str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _new_temporary(path: Path) -> Path:
    """An empty new file beside ``path``, mode 0666 less the umask (like any file the user writes)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


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


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


# -- reading, with one clear error for every unreadable file ---------------------------------

def read_npz(path: str | os.PathLike, key: str, what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON document under ``key`` and the other arrays of an .npz written by this module.

    Raises FileNotFoundError for a missing file and ValueError, naming the file and
    saying it is not a dualconv ``what``, for anything else that cannot be read.
    """
    path = Path(path)
    with open(path, "rb") as f:  # FileNotFoundError / IsADirectoryError / PermissionError as they are
        head = f.read(4)
    document: Any = None
    if not head:
        reason = "the file is empty"
    elif head != b"PK\x03\x04":
        reason = "it is not an .npz archive"
    else:
        try:
            with np.load(path, allow_pickle=False) as data:
                names = data.files
                if key in names:
                    document = json.loads(str(data[key]))
                    arrays = {k: data[k] for k in names if k != key}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            reason = f"it is damaged or truncated ({type(exc).__name__}: {exc})"
        else:
            if isinstance(document, dict):
                return document, arrays
            if key in names:
                reason = f"its {key} entry is not a JSON object"
            else:
                kind = ("a training checkpoint" if CHECKPOINT_KEY in names else
                        "a model file" if MODEL_KEY in names else "an .npz of other arrays")
                reason = f"it is {kind} (no {key} entry)"
    raise ValueError(f"{path} is not a dualconv {what}: {reason}")


# -- training checkpoints ---------------------------------------------------------------

@dataclass
class Checkpoint:
    """What a checkpoint restores: finished epochs, a ``Trainer.state_dict()``, history, metadata."""

    epoch: int  # epochs finished; training resumes at this epoch index
    state: dict[str, Any]  # for Trainer.load_state_dict: model, optimizer, scheduler_epoch
    history: dict[str, list]
    meta: dict[str, Any]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], epoch: int,
                    history: dict[str, list], meta: dict[str, Any] | None = None) -> None:
    """Write ``state`` (a Trainer.state_dict()) after ``epoch`` finished epochs, atomically."""
    opt = state["optimizer"]
    arrays = {f"model/{name}": np.asarray(value) for name, value in state["model"].items()}
    for param, slots in opt["state"].items():
        for slot, value in slots.items():
            arrays[f"optim/{param}/{slot}"] = np.asarray(value)
    document = {
        "format": FORMAT_VERSION,
        "epoch": int(epoch),
        "optimizer": {k: v for k, v in opt.items() if k != "state"},
        "scheduler_epoch": state.get("scheduler_epoch"),
        "history": history,
        "meta": meta or {},
    }
    arrays[CHECKPOINT_KEY] = np.array(json.dumps(document))
    write_npz(path, arrays)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint (ValueError naming the file if it is not one)."""
    document, arrays = read_npz(path, CHECKPOINT_KEY, "checkpoint (an .npz written by save_checkpoint)")
    if document.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {document.get('format')!r}, expected {FORMAT_VERSION}")
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("optim/"):
            _, param, slot = key.split("/", 2)
            optim.setdefault(param, {})[slot] = value
    try:
        state = {"model": model_state, "optimizer": dict(document["optimizer"], state=optim),
                 "scheduler_epoch": document.get("scheduler_epoch", document["epoch"])}
        return Checkpoint(int(document["epoch"]), state, document["history"], document["meta"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a dualconv checkpoint: {type(exc).__name__}: {exc}") from None
