"""Clips from a folder of unlabeled videos (see builder.py).

`build_video_folder` is imported lazily so that decoding workers start without TFDS.
"""


def build_video_folder(*args, **kwargs):
    from data_pipelines.video_folder.builder import build_video_folder

    return build_video_folder(*args, **kwargs)
