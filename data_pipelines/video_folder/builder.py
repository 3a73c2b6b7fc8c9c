"""Clips from any folder of unlabeled videos, as a TFDS array_record dataset.

Features: `frames` uint8 (T, H, W, 3); for provenance only, `source` (the file's path relative
to the folder) and `start_frame` (after resampling). Splits are by source file (a hash of its
relative path), so no video contributes to two splits. Files that cannot be decoded are
skipped, and named in `build_report.json` / `build_report.txt` beside the dataset.

Two steps, each in-process (a pool of `workers` processes) or on Apache Beam (`beam_options`,
e.g. "--runner=DirectRunner --direct_num_workers=4 --direct_running_mode=multi_processing", or
Dataflow, Flink or Spark on a cluster): (1) decode every source, choose its clips and stage its
frames as .npy in the build folder; (2) TFDS writes the clips as array_record. With Beam, step
1 is a Beam pipeline and step 2 TFDS's own Beam writer (`_generate_examples` returns a Beam
transform); the splits, the clips and the report are the same either way. On a cluster the
build folder (`data_dir`) must be storage every worker can read and write.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import pathlib
import shutil
import time

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from data_pipelines import report as dataset_report
from data_pipelines import storage
from data_pipelines.video_folder.sources import (
    ClipSettings,
    SourceResult,
    find_sources,
    process_source,
    process_source_star,
    split_of_source,
)

SPLITS = ("train", "validation", "test")
REPORT_JSON = "build_report.json"
REPORT_TEXT = "build_report.txt"


class GenieVideoFolder(tfds.core.GeneratorBasedBuilder):
    """Writes clips already decoded and staged as .npy frame arrays by `process_source`."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(
        self,
        *,
        by_split: dict[str, list[SourceResult]] | None = None,
        settings: ClipSettings | None = None,
        beam: bool = False,
        **kwargs,
    ):
        self._by_split = by_split or {}
        self._settings = settings or ClipSettings()
        self._beam = beam
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        s = self._settings
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "frames": tfds.features.Tensor(
                        shape=(s.clip_frames, s.height, s.width, 3),
                        dtype=np.uint8,
                        encoding=tfds.features.Encoding.ZLIB,
                    ),
                    "source": tfds.features.Text(),
                    "start_frame": tfds.features.Scalar(dtype=np.int32),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {
            s: self._generate_examples(self._by_split[s]) for s in SPLITS if s in self._by_split
        }

    def _generate_examples(self, results: list[SourceResult]):
        if self._beam:
            import apache_beam as beam

            return beam.Create(results) | beam.FlatMap(_clips_of, self._settings.clip_frames)
        return (
            clip for result in results for clip in _clips_of(result, self._settings.clip_frames)
        )


def _clips_of(result: SourceResult, clip_frames: int):
    """The (key, example) of every kept clip of one staged source."""
    frames = np.load(result.frames_file, mmap_mode="r")
    for start in result.clip_starts:
        yield (
            f"{result.source}@{start}",
            {
                "frames": np.asarray(frames[start : start + clip_frames]),
                "source": result.source,
                "start_frame": start,
            },
        )


def _report_text(root: pathlib.Path, results: list[SourceResult], splits: dict) -> str:
    failed = [r for r in results if r.error]
    kept = sum(len(r.clip_starts) for r in results)
    lines = [
        f"video folder {root}: {len(results)} sources, {len(results) - len(failed)} decoded, "
        f"{len(failed)} failed",
        f"clips kept {kept} ({', '.join(f'{s} {n}' for s, n in splits.items())}); dropped "
        f"{sum(r.static_clips for r in results)} static, "
        f"{sum(r.scene_cut_clips for r in results)} spanning a scene cut",
    ]
    short = [r.source for r in results if not r.error and not r.clip_starts]
    if short:
        lines.append(f"no usable clip (too short, static or cut): {', '.join(short)}")
    if failed:
        lines.append("skipped, could not be decoded:")
        lines += [f"  {r.source}: {r.error}" for r in failed]
    return "\n".join(lines)


def build_video_folder(
    source_dir: str | os.PathLike,
    name: str,
    *,
    fps: float = 10.0,
    size: int | tuple[int, int] = 64,
    clip_frames: int = 16,
    stride: int = 8,
    static_share: float = 0.001,
    scene_cut_threshold: float = 40.0,
    image_fps: float | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    data_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    beam_options: str | None = None,
    overwrite: bool = False,
    verbose: bool = True,
) -> pathlib.Path:
    """Builds `<data_dir>/<name>/` from every video and image folder under `source_dir`, in
    this process and a pool of `workers`, or on Apache Beam with `beam_options` (pipeline
    flags in one string; the module docstring)."""
    root = pathlib.Path(source_dir).expanduser().absolute()
    if not root.is_dir():
        raise NotADirectoryError(f"video folder {root} does not exist or is not a folder")
    final = storage.dataset_path(name, data_dir)
    if storage.is_complete(final) and not overwrite:
        if verbose:
            print(f"dataset {name!r} already exists at {final}; pass --overwrite to rebuild")
            print(dataset_report.summarize(name, data_dir))
        return final
    height, width = (size, size) if isinstance(size, int) else size
    settings = ClipSettings(
        fps, height, width, clip_frames, stride, static_share, scene_cut_threshold, image_fps
    )
    if clip_frames < 2 or stride < 1:
        raise ValueError(f"need clip_frames >= 2 and stride >= 1, got {clip_frames}, {stride}")
    if beam_options is not None:
        _pipeline_options(beam_options)  # Beam installed, flags parse: before any work
    paths = find_sources(root)
    if not paths:
        raise ValueError(
            f"no video files ({', '.join(sorted(s[1:] for s in _suffixes()))}) or image folders "
            f"found in {root}"
        )
    if workers is None:  # starting a worker costs seconds; not worth it for a few files
        workers = max(1, min(os.cpu_count() or 1, len(paths) // 4))
    started = time.time()
    with storage.atomic_build(final, overwrite=overwrite) as staging:
        stage = staging / "decoded"
        stage.mkdir()
        tasks = [(path, root, stage, i, settings) for i, path in enumerate(paths)]
        bar = dict(
            total=len(tasks), desc=f"decoding {root.name}", unit="video", disable=not verbose
        )
        if beam_options is not None:
            results = _decode_with_beam(tasks, beam_options, staging / "beam_results")
        elif workers > 1:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                results = list(tqdm(pool.imap(process_source_star, tasks), **bar))
        else:
            results = [process_source(*task) for task in tqdm(tasks, **bar)]
        by_split: dict[str, list[SourceResult]] = {}
        for result in results:
            if result.clip_starts:
                split = split_of_source(result.source, validation_fraction, test_fraction)
                by_split.setdefault(split, []).append(result)
        splits = {s: sum(len(r.clip_starts) for r in by_split[s]) for s in SPLITS if s in by_split}
        report = _report_text(root, results, splits)
        if not by_split:
            decoded = any(not r.error for r in results)
            problem = "no clip survived" if decoded else "no decodable video"
            raise ValueError(f"{problem} in {root}\n{report}")
        builder = GenieVideoFolder(
            by_split=by_split,
            settings=settings,
            beam=beam_options is not None,
            data_dir=str(staging / "tfds"),
            file_format="array_record",
        )
        with storage.quiet_tfds():
            builder.download_and_prepare(download_config=_download_config(beam_options))
        shutil.rmtree(stage)
        storage.move_tfds_output(staging / "tfds", staging)
        (staging / REPORT_TEXT).write_text(report + "\n")
        (staging / REPORT_JSON).write_text(
            json.dumps(
                {
                    "source_dir": str(root),
                    "settings": dataclasses.asdict(settings),
                    "splits": splits,
                    "failed": {r.source: r.error for r in results if r.error},
                    "sources": [
                        {k: v for k, v in dataclasses.asdict(r).items() if k != "frames_file"}
                        | {"clips": len(r.clip_starts)}
                        for r in results
                    ],
                },
                indent=2,
            )
            + "\n"
        )
        storage.write_build_info(
            staging,
            source="video_folder",
            name=name,
            source_dir=str(root),
            settings=dataclasses.asdict(settings),
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            failed_sources=sum(1 for r in results if r.error),
            build_seconds=time.time() - started,
            built_at=storage.now(),
        )
        dataset_report.write_sample_png(staging)
    if verbose:
        print(report)
        print(f"report saved to {final / REPORT_TEXT}")
        print(dataset_report.summarize(name, data_dir))
    return final


def _pipeline_options(beam_options: str):
    import shlex

    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise ValueError(
            "--beam-pipeline-options needs Apache Beam: pip install -e '.[beam]'"
        ) from None

    return PipelineOptions(shlex.split(beam_options))


def _download_config(beam_options: str | None):
    if beam_options is None:
        return None
    return tfds.download.DownloadConfig(beam_options=_pipeline_options(beam_options))


def _decode_with_beam(tasks: list, beam_options: str, out: pathlib.Path) -> list[SourceResult]:
    """Step 1 on Beam: every task's `process_source` result, in task order. The results travel
    back through JSON lines written by the pipeline beside the staged frames."""
    options = _pipeline_options(beam_options)
    import apache_beam as beam

    from data_pipelines.video_folder.sources import process_indexed

    def to_json(indexed) -> str:
        index, result = indexed
        return json.dumps({"index": index, **dataclasses.asdict(result)})

    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "sources" >> beam.Create(tasks)
            | "decode" >> beam.Map(process_indexed)
            | "json" >> beam.Map(to_json)
            | "write" >> beam.io.WriteToText(str(out / "results"), file_name_suffix=".jsonl")
        )
    rows = [
        json.loads(line)
        for file in sorted(out.glob("results*.jsonl"))
        for line in file.read_text().splitlines()
        if line.strip()
    ]
    rows.sort(key=lambda row: row.pop("index"))
    if len(rows) != len(tasks):
        raise RuntimeError(
            f"the Beam pipeline returned {len(rows)} results for {len(tasks)} sources"
        )
    shutil.rmtree(out)
    return [SourceResult(**row) for row in rows]


def _suffixes():
    from data_pipelines.video_folder.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    return VIDEO_SUFFIXES | IMAGE_SUFFIXES
