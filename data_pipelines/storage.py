"""Where datasets live on disk, and how a build reaches there without ever looking complete early.

A dataset called NAME is the folder `<data_dir>/NAME/`: the TFDS files (`dataset_info.json`,
`features.json`, `*.array_record-*`) plus `genie_build.json` (how and when it was built) and
`sample.png`. It is read back with `tfds.builder_from_directory`, so readers never need the
builder class.

A build writes everything into `<data_dir>/.NAME.incomplete/` and renames the finished folder
into place as its very last step, so `<data_dir>/NAME/` exists only once the dataset is
complete. A killed build leaves only the hidden temporary folder, which the next build of NAME
deletes before starting.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import time
from collections.abc import Iterator

DATA_DIR_ENV = "GENIE_DATA_DIR"
BUILD_INFO_FILE = "genie_build.json"
SAMPLE_FILE = "sample.png"


def data_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
    """The data directory: the explicit `path` (a flag) > $GENIE_DATA_DIR > ./data."""
    if path is None:
        path = os.environ.get(DATA_DIR_ENV) or "data"
    return pathlib.Path(path).expanduser().absolute()


def dataset_path(name: str, data_dir_path: str | os.PathLike | None = None) -> pathlib.Path:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"dataset name {name!r} must be a plain folder name, e.g. 'coinrun_tiny'")
    return data_dir(data_dir_path) / name


def is_complete(path: pathlib.Path) -> bool:
    return (path / "dataset_info.json").is_file() and (path / BUILD_INFO_FILE).is_file()


def incomplete_path(final: pathlib.Path) -> pathlib.Path:
    return final.parent / f".{final.name}.incomplete"


@contextlib.contextmanager
def atomic_build(final: pathlib.Path, overwrite: bool = False) -> Iterator[pathlib.Path]:
    """Yields an empty temporary folder; on success it replaces `final` in one rename.

    On an exception the temporary folder is removed; on a kill it stays behind and the next
    `atomic_build` of the same dataset removes it first.
    """
    if final.exists() and not is_complete(final) and not overwrite:
        raise FileExistsError(
            f"{final} exists but is not a complete genie dataset; pass --overwrite to replace it"
        )
    staging = incomplete_path(final)
    if staging.exists():
        shutil.rmtree(staging)  # left behind by a killed build
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():
        previous = final.parent / f".{final.name}.previous"
        shutil.rmtree(previous, ignore_errors=True)
        final.rename(previous)
        staging.rename(final)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        staging.rename(final)


def move_tfds_output(tfds_data_dir: pathlib.Path, dest: pathlib.Path) -> None:
    """Moves the files of the single `<builder>/<version>/` folder TFDS wrote into `dest`."""
    (info_file,) = tfds_data_dir.glob("*/*/dataset_info.json")
    for item in info_file.parent.iterdir():
        item.rename(dest / item.name)
    shutil.rmtree(tfds_data_dir)


def write_build_info(path: pathlib.Path, **info) -> None:
    (path / BUILD_INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")


def read_build_info(path: pathlib.Path) -> dict:
    file = path / BUILD_INFO_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def disk_bytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


@contextlib.contextmanager
def quiet_tfds() -> Iterator[None]:
    """TFDS prints its own progress bars and 'Downloading and preparing' banner; ours suffice."""
    import logging

    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.WARNING)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        try:
            yield
        finally:
            absl_logger.setLevel(level)
