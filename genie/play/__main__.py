"""`python -m genie.play`: the same as `genie play`."""

from genie import cli
from genie.play.cli import main

cli.run(main, None, prog="genie play")
