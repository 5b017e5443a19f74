"""The one place that starts processes.

Everything goes through `run()` (or `popen()` for long-lived children, `stream()` for logged ones,
`pipe()` for pipelines): argv lists only, never a shell string, and an explicit environment whenever
a command runs inside a target tree, because the host's environment names files (CA bundles,
virtualenvs) that mean something else in there. plumbum builds the commands (program lookup,
quoting for the log, pipelines); the process itself starts here, with exactly the environment given
(plumbum would merge it into the host's). git goes through GitPython, set up here the same way: no
prompts, and its command lines in the debug log.
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import git
from plumbum import local
from plumbum.commands.base import BaseCommand
from plumbum.path.local import LocalPath

from .errors import CommandError

log = logging.getLogger(__name__)

# What a command run inside a target may inherit from the host: proxies only.
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
PR_SET_PDEATHSIG = 1
DRAIN_GRACE = 2.0  # seconds its output may stay open after a command exited (a daemon it started holds it)
TARGET_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def target_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for a command inside a target root: never the host's environment."""
    env = {
        "PATH": TARGET_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": os.environ.get("TERM", "dumb"),
        "SHELL": "/bin/sh",
    }
    env.update({k: v for k, v in os.environ.items() if k in PROXY_VARS})
    if extra:
        env.update(extra)
    return env


def which(name: str) -> str | None:
    return shutil.which(name)


def command(argv: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None = None) -> BaseCommand | None:
    """The plumbum command for argv, the program looked up on the PATH the process will have (env's,
    else ours), as exec would; None when it is not there."""
    prog, *args = (os.fspath(a) for a in argv)
    path = prog if "/" in prog else shutil.which(prog, path=(os.environ if env is None else env).get("PATH"))
    return local[LocalPath(path)][tuple(args)] if path else None


def _argv(argv: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None) -> tuple[list[str], str]:
    """The argv to exec and its shell-quoted form for the log. A program that is not found stays as
    given, so starting it raises FileNotFoundError as it always did."""
    cmd = command(argv, env)
    if cmd is None:
        given = _given(argv)
        return given, " ".join(given)
    return list(cmd.formulate()), str(cmd)


def _given(argv: Sequence[str | os.PathLike[str]]) -> list[str]:
    """argv as the caller wrote it, for errors and results."""
    return [os.fspath(a) for a in argv]


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    capture: bool = False,
    input: str | bytes | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
    timeout: float | None = None,
    hint: str = "",
) -> Result:
    """Run argv to completion.

    capture=True collects stdout/stderr as text (stderr merged into the error tail on failure).
    Otherwise output goes to `stdout`/`stderr` (default: inherited). A non-zero exit raises
    CommandError when check=True.
    """
    args, shown = _argv(argv, env)
    log.debug("run: %s", shown)
    text = not isinstance(input, bytes)
    proc = subprocess.run(
        args,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        input=input,
        stdout=subprocess.PIPE if capture else stdout,
        stderr=subprocess.PIPE if capture else stderr,
        timeout=timeout,
        text=text,
        check=False,
    )
    out = proc.stdout if capture and text else (proc.stdout.decode(errors="replace") if capture else "")
    err = proc.stderr if capture and text else (proc.stderr.decode(errors="replace") if capture else "")
    if check and proc.returncode != 0:
        raise CommandError(_given(argv), proc.returncode, (out or "") + (err or ""), hint=hint)
    return Result(_given(argv), proc.returncode, out or "", err or "")


def output(argv: Sequence[str | os.PathLike[str]], **kw: Any) -> str:
    """Run argv and return its stdout (stripped)."""
    return run(argv, capture=True, **kw).stdout.strip()


def popen(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: IO[Any] | int | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived child (qemu, a compressor, a streaming hook). The caller must wait for it.

    The child gets SIGKILL when this process dies, even by SIGKILL (which runs no clean-up): a VM
    or a compressor never outlives the builder.
    """
    args, shown = _argv(argv, env)
    log.debug("popen: %s", shown)
    return subprocess.Popen(
        args, env=dict(env) if env is not None else None, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def stream(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    on_line: Any = None,
    tail_lines: int = 20,
    hint: str = "",
) -> list[str]:
    """Run argv, handing each output line (stdout+stderr merged) to on_line; raise with the last lines.

    Returns the tail of the output. Used for hooks and other long steps whose output is logged live.
    """
    args, shown = _argv(argv, env)
    log.debug("stream: %s", shown)
    tail: list[str] = []
    proc = subprocess.Popen(
        args,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None

    def emit(raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\n")
        tail.append(line)
        del tail[:-tail_lines]
        if on_line:
            on_line(line)

    with proc.stdout, selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        pending, exited = b"", 0.0
        while True:
            if sel.select(timeout=0.2):
                data = os.read(proc.stdout.fileno(), 1 << 16)
                if not data:
                    break
                *lines, pending = (pending + data).split(b"\n")
                for raw in lines:
                    emit(raw)
            if proc.poll() is not None:
                # A process the command left behind (a daemon a hook started) keeps the pipe open:
                # wait for the command itself, as dib-run-parts does, not for the pipe to close.
                exited = exited or time.monotonic()
                if time.monotonic() - exited > DRAIN_GRACE:
                    log.warning("a process started by `%s` still holds its output after it exited; not "
                                "waiting for it", shown[:160])
                    break
        if pending:
            emit(pending)
    rc = proc.wait()
    if rc != 0:
        err = CommandError(_given(argv), rc, "\n".join(tail), hint=hint)
        raise err
    return tail


def pipe(*argvs: Sequence[str | os.PathLike[str]], cwd: str | os.PathLike[str] | None = None,
         check: bool = True, hint: str = "") -> Result:
    """`a | b | ...` on the host (plumbum's pipeline, the host's environment); stdout of the last one."""
    cmds = []
    for argv in argvs:
        cmd = command(argv)
        if cmd is None:
            raise FileNotFoundError(f"{_given(argv)[0]}: command not found")
        cmds.append(cmd)
    chain = cmds[0]
    for cmd in cmds[1:]:
        chain = chain | cmd
    log.debug("pipe: %s", chain)
    with local.cwd(cwd or os.getcwd()):
        rc, out, err = chain.run(retcode=None)
    if check and rc != 0:
        raise CommandError(str(chain).split(), rc, out + err, hint=hint)
    return Result([str(chain)], rc, out, err)


# git: GitPython, never prompting (a bad URL fails instead of asking for a password); GitPython logs
# each git command line at debug level, so they reach build.log.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}


def git_repo(path: str | os.PathLike[str]) -> git.Repo:
    repo = git.Repo(path)
    repo.git.update_environment(**GIT_ENV)
    return repo


def git_clone(url: str, dest: str | os.PathLike[str], **kw: Any) -> git.Repo:
    repo = git.Repo.clone_from(url, os.fspath(dest), env=GIT_ENV, **kw)
    repo.git.update_environment(**GIT_ENV)
    return repo


def git_init(path: str | os.PathLike[str], **kw: Any) -> git.Repo:
    repo = git.Repo.init(path, **kw)
    repo.git.update_environment(**GIT_ENV)
    return repo


def chroot_argv(root: Path, argv: Sequence[str]) -> list[str]:
    """`chroot root argv...`. The environment is never on the command line: run it with env= (a
    target_env()), which exec hands on, so secrets among the variables never show in the log or in
    /proc/PID/cmdline."""
    return [which("chroot") or "/usr/sbin/chroot", os.fspath(root), *argv]
