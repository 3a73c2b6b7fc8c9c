import sys

import pytest

from genie import __main__ as genie_main
from genie import host_memory
from genie.host_memory import SETTING, environment_with_huge_pages

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the tunable is glibc's")


@linux_only
def test_sets_the_tunable_and_keeps_the_rest_of_the_environment():
    env = environment_with_huge_pages({"HOME": "/h"}, (2, 36))
    assert env == {"HOME": "/h", "GLIBC_TUNABLES": SETTING}
    env = environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, (2, 40))
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{SETTING}"


@pytest.mark.parametrize(
    "environ, glibc",
    [
        ({}, None),  # not glibc (musl, macOS)
        ({}, (2, 34)),  # glibc without the tunable
        ({"GENIE_HUGE_PAGES": "0"}, (2, 36)),  # turned off
        ({"GLIBC_TUNABLES": SETTING}, (2, 36)),  # already running with it: no loop
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36)),  # the user's choice stands
        ({"GLIBC_TUNABLES": "a.b=1:glibc.malloc.hugetlb=2"}, (2, 36)),
    ],
)
def test_leaves_the_process_alone(environ, glibc):
    assert environment_with_huge_pages(environ, glibc) is None


@linux_only
def test_the_command_line_runs_itself_again_once(monkeypatch):
    calls = []

    def execve(path, args, env):
        calls.append((path, args, env))
        raise SystemExit(0)  # execve never returns

    monkeypatch.setattr(host_memory.os, "execve", execve)
    monkeypatch.setattr(host_memory, "_glibc_version", lambda: (2, 36))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("GENIE_HUGE_PAGES", raising=False)
    command = ["/venv/bin/python", "-X", "utf8", "/venv/bin/genie", "probe", "runs/x"]
    monkeypatch.setattr(sys, "orig_argv", command)
    monkeypatch.setattr(sys, "argv", command[3:])
    with pytest.raises(SystemExit):
        genie_main.main()
    [(path, args, env)] = calls
    assert path == sys.executable
    assert args == command  # the same command line, interpreter flags included
    assert env["GLIBC_TUNABLES"] == SETTING

    # The process it starts has the tunable, so it goes on to the verb (here: usage, exit 0).
    calls.clear()
    monkeypatch.setenv("GLIBC_TUNABLES", SETTING)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/genie", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        genie_main.main()
    assert exit_info.value.code == 0 and not calls


def test_a_call_from_python_never_runs_itself_again(monkeypatch):
    monkeypatch.setattr(host_memory.os, "execve", lambda *a: pytest.fail("re-executed"))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    with pytest.raises(SystemExit):
        genie_main.main(["--help"])


# Touches 64 MiB from malloc (not numpy, which asks for huge pages itself) and prints how much
# of this process's anonymous memory the kernel backs with huge pages.
_MALLOC_64_MIB = """
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 64 << 20
ctypes.memset(libc.malloc(size), 1, size)
for line in open("/proc/self/smaps_rollup"):
    if line.startswith("AnonHugePages:"):
        print(int(line.split()[1]))
"""


def _thp_mode() -> str | None:
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return None
    return text.split("[")[1].split("]")[0]


@linux_only
@pytest.mark.skipif(
    host_memory._glibc_version() is None
    or host_memory._glibc_version() < host_memory.MINIMUM_GLIBC
    or _thp_mode() not in ("madvise", "always"),
    reason="needs glibc >= 2.35 and transparent huge pages (madvise or always)",
)
def test_the_tunable_gives_malloc_huge_pages():
    import subprocess

    def huge_kib(environ):
        run = subprocess.run(
            [sys.executable, "-c", _MALLOC_64_MIB], env=environ, capture_output=True, text=True
        )
        return int(run.stdout)

    environ = environment_with_huge_pages({"PATH": "/usr/bin:/bin"}, (2, 36))
    assert huge_kib(environ) >= 32 * 1024
    if _thp_mode() == "madvise":  # without the tunable nothing asks for them
        assert huge_kib({"PATH": "/usr/bin:/bin"}) == 0
