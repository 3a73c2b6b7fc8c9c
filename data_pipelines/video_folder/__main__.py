"""python -m data_pipelines.video_folder SRC_DIR --name NAME [--fps 10 --size 64 ...]"""

from __future__ import annotations

import argparse

from data_pipelines.video_folder.builder import build_video_folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m data_pipelines.video_folder",
        description="Cut every video (mp4, webm, mkv, avi, gif, mov) and numbered-image folder "
        "under SRC_DIR into clips, written to <data-dir>/<name>.",
    )
    parser.add_argument("source_dir", metavar="SRC_DIR")
    parser.add_argument("--name", required=True, help="dataset name (a folder name)")
    parser.add_argument("--fps", type=float, default=10.0, help="resample to this frame rate")
    parser.add_argument("--size", type=int, nargs="+", default=[64], help="S or H W")
    parser.add_argument("--clip-frames", type=int, default=16, help="frames per clip (T)")
    parser.add_argument("--stride", type=int, default=8, help="frames between clip starts")
    parser.add_argument(
        "--static-share",
        type=float,
        default=0.001,
        help="drop clips where on average fewer than this share of the pixels move per step "
        "(a pixel moves when a channel changes by more than 12 of 255); 0 keeps every clip",
    )
    parser.add_argument(
        "--scene-cut-threshold",
        type=float,
        default=40.0,
        help="drop clips where one step's mean absolute difference (0..255) exceeds this",
    )
    parser.add_argument(
        "--image-fps",
        type=float,
        default=None,
        help="frame rate of numbered-image folders (default: --fps)",
    )
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--data-dir", default=None, help="default: $GENIE_DATA_DIR or ./data")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="default: one per 4 files, up to all CPU cores",
    )
    parser.add_argument(
        "--beam-pipeline-options",
        default=None,
        metavar="FLAGS",
        help='build on Apache Beam (pip install "genie[beam]") with these pipeline flags, e.g. '
        '"--runner=DirectRunner --direct_num_workers=4 --direct_running_mode=multi_processing" '
        "or a Dataflow/Flink/Spark runner (data_pipelines/README.md)",
    )
    parser.add_argument("--overwrite", action="store_true", help="rebuild an existing dataset")
    args = parser.parse_args(argv)
    if len(args.size) not in (1, 2):
        parser.error("--size takes S or H W")
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    try:
        build_video_folder(
            args.source_dir,
            args.name,
            fps=args.fps,
            size=size,
            clip_frames=args.clip_frames,
            stride=args.stride,
            static_share=args.static_share,
            scene_cut_threshold=args.scene_cut_threshold,
            image_fps=args.image_fps,
            validation_fraction=args.validation_fraction,
            test_fraction=args.test_fraction,
            data_dir=args.data_dir,
            workers=args.workers,
            beam_options=args.beam_pipeline_options,
            overwrite=args.overwrite,
        )
    except (ValueError, NotADirectoryError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
