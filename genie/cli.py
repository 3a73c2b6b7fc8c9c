"""How every command-line entry point reports the errors a user can cause: one line, no traceback.

A wrong path, a split the dataset lacks, a config that does not fit a checkpoint, a training
run that stopped on a non-finite step: these are raised deep inside the library as ordinary
exceptions with messages that name the problem and the file. At the command line they end as
`genie <verb>: error: <message>` and exit status 2 (1 for a stopped training run). Set
GENIE_TRACEBACK=1 to see the traceback as well (for bug reports).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

# What a user's input or files can cause. Anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def run(main: Callable[[list[str]], None], argv: Sequence[str] | None, prog: str) -> None:
    """Calls `main(argv)`; a user error becomes one line on stderr and a non-zero exit."""
    from genie.train import NonFiniteLossError

    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("GENIE_TRACEBACK"):
        main(argv)
        return
    try:
        main(argv)
    except NonFiniteLossError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except USER_ERRORS as error:
        message = str(error) or type(error).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
