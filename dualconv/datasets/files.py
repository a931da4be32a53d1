"""Finding, verifying and downloading the gzipped files a dataset is made of.

Every file is checked against a SHA-256 written into this code before a byte of
it is parsed, so a truncated or corrupted file is reported as a checksum error,
never as a traceback from gzip or NumPy. A file is accepted when either

- the ``.gz`` file hashes to the published SHA-256, or
- its decompressed content hashes to the SHA-256 of the published content
  (a recompressed copy, such as the one Debian's dataset-fashion-mnist ships).

Where each file is looked for, in order: ``data_dir`` (and ``data_dir/<subdir>``),
``$DUALCONV_DATA/<subdir>``, the dataset's system directories, and the user cache
``pooch.os_cache("dualconv")/<subdir>``. A file found nowhere, or found only
corrupted, is downloaded into the cache (never over a user's file) from the
dataset's mirrors through pooch.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

DATA_ENV = "DUALCONV_DATA"
DOWNLOAD_TIMEOUT_S = 30


class DatasetError(RuntimeError):
    """A dataset could not be loaded; the message says what to do."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """Some of a dataset's files are nowhere on disk and could not be downloaded."""


class ChecksumError(DatasetError):
    """A dataset file does not match its published SHA-256 and no good copy could be fetched."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name, the SHA-256 of the ``.gz`` and of its decompressed content."""

    name: str
    sha256: str
    raw_sha256: str


@dataclass(frozen=True)
class FileSet:
    """The files of one dataset and where they live."""

    title: str  # for messages: "MNIST"
    subdir: str  # under $DUALCONV_DATA and the cache: "mnist"
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]  # base URLs ending in "/"
    system_dirs: tuple[str, ...] = field(default=())
    debian_package: str | None = None  # a package that installs the files into system_dirs


def cache_dir(subdir: str) -> Path:
    """The user cache directory for a dataset: ``pooch.os_cache("dualconv")/<subdir>``."""
    import pooch

    return Path(pooch.os_cache("dualconv")) / subdir


def search_dirs(fileset: FileSet, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched for the dataset's files, in order, without duplicates."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / fileset.subdir]
    env = os.environ.get(DATA_ENV)
    if env:
        dirs.append(Path(env) / fileset.subdir)
    dirs += [Path(d) for d in fileset.system_dirs]
    dirs.append(cache_dir(fileset.subdir))
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(path: Path, remote: RemoteFile, title: str) -> bytes:
    """The decompressed content of ``path`` after checking it against ``remote``'s SHA-256.

    Raises ChecksumError (naming the file and both hashes) when it does not match.
    """
    data = path.read_bytes()
    digest = _sha256(data)
    try:
        content = gzip.decompress(data)
    except (OSError, EOFError, zlib.error):  # truncated or not gzip at all
        content = None
    if digest == remote.sha256 and content is not None:
        return content
    if content is not None and _sha256(content) == remote.raw_sha256:
        return content
    raise ChecksumError(
        f"{path}: checksum mismatch for the {title} file {remote.name} "
        f"(SHA-256 {digest}, expected {remote.sha256}); "
        f"the file is truncated, corrupted or from another dataset"
    )


def download(remote: RemoteFile, mirrors: tuple[str, ...], directory: Path) -> Path:
    """Download ``remote`` into ``directory`` from the first mirror that serves it intact.

    Raises OSError listing every mirror's failure. Tests replace this function to
    stay offline.
    """
    import pooch

    reasons = []
    for base in mirrors:
        url = base + remote.name
        try:
            downloader = pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=DOWNLOAD_TIMEOUT_S)
            path = pooch.retrieve(
                url,
                known_hash=f"sha256:{remote.sha256}",
                fname=remote.name,
                path=directory,
                downloader=downloader,
            )
            return Path(path)
        except Exception as exc:  # requests' connection errors, pooch's hash ValueError, OSError
            reasons.append(f"{url}: {type(exc).__name__}: {_shorten(str(exc))}")
    raise OSError("download failed: " + "; ".join(reasons))


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fetch(fileset: FileSet, data_dir: str | os.PathLike | None = None,
          names: tuple[str, ...] | None = None, strict: bool = False) -> dict[str, bytes]:
    """The decompressed, verified content of every file of ``fileset`` (or of ``names``), by file name.

    Raises DatasetNotFoundError or ChecksumError, once, covering every file that
    could not be had, with what to do about it; DatasetNotFoundError at once when
    ``data_dir`` is given but is not a directory. With ``strict`` and a ``data_dir``,
    only ``data_dir`` and ``data_dir/<subdir>`` are searched, nothing is downloaded, and
    the first file missing or corrupt there is the error, named.
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DatasetNotFoundError(f"the data directory {data_dir} does not exist (or is not a directory)")
    wanted = [f for f in fileset.files if names is None or f.name in names]
    if strict and data_dir is not None:
        return _fetch_from(fileset, Path(data_dir), wanted)
    dirs = search_dirs(fileset, data_dir)
    cache = cache_dir(fileset.subdir)
    contents: dict[str, bytes] = {}
    corrupt: dict[str, list[ChecksumError]] = {}
    missing: list[str] = []
    download_error: str | None = None
    for remote in wanted:
        for d in dirs:
            path = d / remote.name
            if not path.is_file():
                continue
            try:
                contents[remote.name] = read_verified(path, remote, fileset.title)
                break
            except ChecksumError as exc:
                corrupt.setdefault(remote.name, []).append(exc)
        if remote.name in contents:
            continue
        if download_error is None:  # once one download failed, do not wait on the others
            try:
                path = download(remote, fileset.mirrors, cache)
                contents[remote.name] = read_verified(path, remote, fileset.title)
                continue
            except (OSError, DatasetError) as exc:
                download_error = str(exc)
        missing.append(remote.name)
    if not missing:
        return contents
    bad = [exc for name in missing for exc in corrupt.get(name, [])]
    raise _problem(fileset, dirs, missing, bad, download_error, [remote.name for remote in wanted])


def _fetch_from(fileset: FileSet, data_dir: Path, wanted: list[RemoteFile]) -> dict[str, bytes]:
    """fetch from an explicit data directory alone: no fallback to $DUALCONV_DATA, the cache or a download."""
    contents: dict[str, bytes] = {}
    for remote in wanted:
        found = [p for p in (data_dir / remote.name, data_dir / fileset.subdir / remote.name) if p.is_file()]
        if not found:
            raise DatasetNotFoundError(
                f"--data-dir {data_dir}: no {fileset.title} file {remote.name} there (nor in "
                f"{data_dir / fileset.subdir}); put {_the_files([f.name for f in wanted])} "
                f"there, or leave out --data-dir to use ${DATA_ENV}/{fileset.subdir} or the download")
        errors = []
        for path in found:
            try:
                contents[remote.name] = read_verified(path, remote, fileset.title)
                break
            except ChecksumError as exc:
                errors.append(exc)
        else:
            raise errors[0]
    return contents


def _the_files(names: list[str]) -> str:
    """'the file a' or 'the 2 files a, b': what a command needs (evaluate needs the test files only)."""
    return f"the file {names[0]}" if len(names) == 1 else f"the {len(names)} files {', '.join(names)}"


def _problem(
    fileset: FileSet, dirs: list[Path], missing: list[str], corrupt: list[ChecksumError], download_error: str | None,
    wanted: list[str],
) -> DatasetError:
    lines = [
        f"{fileset.title}: {len(missing)} of the {len(wanted)} files needed could not be loaded: "
        f"{', '.join(missing)}.",
    ]
    lines += [f"  {exc}" for exc in corrupt]
    lines += [
        f"Looked in: {', '.join(str(d) for d in dirs)}"
        + ("." if os.environ.get(DATA_ENV) else f" (${DATA_ENV} is not set)."),
        f"Downloading into {cache_dir(fileset.subdir)} failed ({download_error}).",
        f"Put {_the_files(wanted)} in ${DATA_ENV}/{fileset.subdir} or in a directory given as "
        f"--data-dir (data_dir=...)"
        + (f" (Debian: apt install {fileset.debian_package})" if fileset.debian_package else "")
        + ", or use --dataset digits, which ships with scikit-learn and works offline.",
    ]
    message = "; ".join(line.strip().rstrip(".") for line in lines) + "."  # one line, as the CLI prints it
    if corrupt:
        return ChecksumError(message)
    return DatasetNotFoundError(message)
