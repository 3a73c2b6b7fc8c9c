"""Procgen CoinRun, the Genie paper's reference dataset (see builder.py).

`build_coinrun` is imported lazily so that generation workers start without TFDS.
"""


def build_coinrun(*args, **kwargs):
    from data_pipelines.coinrun.builder import build_coinrun

    return build_coinrun(*args, **kwargs)


def summarize(name, data_dir=None):
    from data_pipelines.report import summarize

    return summarize(name, data_dir)
