"""The seed's optional end-to-end test, done right: run metal3-dev-env against our tar.

The seed (build spec §1.2 step 9) cloned metal3-dev-env, exported USE_LOCAL_IPA=true and
IPA_DOWNLOAD_ENABLED=false, and ran `make || make clean`, `make test || make clean`, `make clean`:
every failure was swallowed, and QUIET_CLEANUP hid the cleanup output when it was *false*. Here a
failing `make` or `make test` fails the run (after `make clean`), and quiet_cleanup=True hides it.

metal3-dev-env copies `${LOCAL_IPA_PATH}/ironic-python-agent.tar`: that file name is fixed on its
side, so a tar with another name is linked under that name in a staging directory.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git

from .. import run
from ..errors import BuildError, CommandError, InputError
from ..log import step

log = logging.getLogger(__name__)

DEFAULT_REPO = "https://github.com/metal3-io/metal3-dev-env"
IPA_TAR_NAME = "ironic-python-agent.tar"  # what metal3-dev-env looks for in LOCAL_IPA_PATH


@dataclass
class Metal3Result:
    checkout: Path
    commit: str
    ran: list[str] = field(default_factory=list)  # make targets run, in order ("" is the default goal)


def _is_url(s: str) -> bool:
    return "://" in s or s.startswith("git@")


def checkout(
    location_or_url: str | Path | None,
    *,
    branch: str,
    commit: str,
    workspace: Path,
    repo_url: str = DEFAULT_REPO,
) -> Path:
    """An existing directory is used in place; otherwise the repository is cloned (single branch).

    A URL is cloned into <workspace>/metal3-dev-env, a path that does not exist yet is cloned from
    repo_url into that path (DEV_ENV_REPO_LOCATION), None clones repo_url into the workspace.
    """
    url = repo_url
    if location_or_url is None:
        dest = workspace / "metal3-dev-env"
    elif _is_url(str(location_or_url)):
        url, dest = str(location_or_url), workspace / "metal3-dev-env"
    else:
        dest = Path(location_or_url)
    ours = dest == workspace / "metal3-dev-env"  # the builder's own clone, not the user's checkout
    try:
        if dest.is_dir() and any(dest.iterdir()) and ours:
            # kept from an earlier build: follow the branch as a fresh clone would (the seed's was fresh)
            with step(f"update {dest} to {branch}"):
                repo = run.git_repo(dest)
                repo.remotes.origin.set_url(url)
                repo.git.fetch("--quiet", "origin", branch)
                repo.git.checkout("--quiet", "--force", "--detach", "FETCH_HEAD")
        elif dest.is_dir() and any(dest.iterdir()):
            log.info("using the metal3-dev-env checkout in %s as it is", dest)
            repo = run.git_repo(dest)
        else:
            with step(f"clone {url} ({branch}) into {dest}"):
                dest.parent.mkdir(parents=True, exist_ok=True)
                repo = run.git_clone(url, dest, branch=branch, single_branch=True)
        if commit and commit != "HEAD":
            repo.git.checkout(commit)
        return Path(repo.working_tree_dir or dest)
    except git.InvalidGitRepositoryError:
        hint = "give a checkout, or a path that does not exist yet to clone into"
        raise InputError(f"{dest} is not a git checkout of metal3-dev-env", hint) from None
    except git.GitCommandError as e:
        detail = (e.stderr or str(e)).strip().splitlines()[-1:] or [""]
        raise BuildError(
            f"metal3-dev-env: git {e.command[1] if len(e.command) > 1 else ''} failed: {detail[0].strip()}",
            "check the repository, METAL3_DEV_ENV_BRANCH and METAL3_DEV_ENV_COMMIT",
        ) from None


def local_ipa_dir(tar_path: Path, workspace: Path) -> Path:
    """The directory to give as LOCAL_IPA_PATH: the tar's own, unless its name is not the fixed one."""
    if not tar_path.is_file():
        raise InputError(f"{tar_path} not found", "build first: metal3-dev-env takes that tar")
    if tar_path.name == IPA_TAR_NAME:
        return tar_path.resolve().parent
    staging = workspace / "metal3-local-ipa"
    staging.mkdir(parents=True, exist_ok=True)
    target = staging / IPA_TAR_NAME
    target.unlink(missing_ok=True)
    try:
        os.link(tar_path, target)
    except OSError:
        shutil.copy2(tar_path, target)
    log.info("metal3-dev-env reads %s: staged %s there", IPA_TAR_NAME, tar_path.name)
    return staging.resolve()  # make runs in the checkout: a relative path would point elsewhere


def _make(target: str, cwd: Path, env: dict[str, str], *, quiet: bool = False) -> None:
    argv = ["make", target] if target else ["make"]
    if quiet:
        with open(os.devnull, "wb") as null:
            run.run(argv, cwd=cwd, env=env, stdout=null, stderr=null)
    else:
        run.stream(argv, cwd=cwd, env=env, on_line=lambda line: log.info("metal3: %s", line), tail_lines=30)


def run_metal3_dev_env(
    location_or_url: str | Path | None,
    tar_path: Path,
    *,
    branch: str = "main",
    commit: str = "HEAD",
    quiet_cleanup: bool = False,
    workspace: Path,
    repo_url: str = DEFAULT_REPO,
) -> Metal3Result:
    """make, make test, then always make clean; a failure of make or make test raises BuildError."""
    ipa_dir = local_ipa_dir(Path(tar_path), workspace)
    tree = checkout(location_or_url, branch=branch, commit=commit, workspace=workspace, repo_url=repo_url)
    head = run.git_repo(tree).head.commit.hexsha
    env = dict(os.environ)
    env.update({"USE_LOCAL_IPA": "true", "IPA_DOWNLOAD_ENABLED": "false", "LOCAL_IPA_PATH": str(ipa_dir)})
    result = Metal3Result(tree, head)
    failure: CommandError | None = None
    failed_target = ""
    try:
        for target in ("", "test"):
            name = f"make {target}".strip()
            result.ran.append(target)
            try:
                with step(f"metal3-dev-env: {name}"):
                    _make(target, tree, env)
            except CommandError as e:
                failure, failed_target = e, name
                break
    except KeyboardInterrupt:
        log.warning("interrupted: run `make clean` in %s to tear the metal3 environment down", tree)
        raise
    result.ran.append("clean")
    try:
        with step("metal3-dev-env: make clean"):
            _make("clean", tree, env, quiet=quiet_cleanup)
    except CommandError as e:
        if failure is None:
            raise BuildError(f"metal3-dev-env: make clean failed (exit {e.returncode})",
                             f"see the output above; the environment in {tree} may be left running",
                             tail=e.tail) from None  # fmt: skip
        log.warning("metal3-dev-env: make clean failed too (exit %s)", e.returncode)
    if failure is not None:
        raise BuildError(
            f"metal3-dev-env: {failed_target} failed (exit {failure.returncode}) at {head[:12]}",
            f"the output is above; the checkout is {tree} (make clean was run)",
            tail=failure.tail,
        )
    return result


def run_from_config(cfg: Any, tar_path: Path, *, location: str | Path | None = None) -> Metal3Result:
    """run_metal3_dev_env with the seed's settings: DEV_ENV_REPO_LOCATION, METAL3_DEV_ENV_BRANCH/COMMIT,
    QUIET_CLEANUP; `location` (boot-test --metal3-dev-env DIR) wins over DEV_ENV_REPO_LOCATION."""
    return run_metal3_dev_env(
        location or cfg.dev_env_location,
        tar_path,
        branch=cfg.dev_env_branch,
        commit=cfg.dev_env_commit,
        quiet_cleanup=cfg.quiet_cleanup,
        workspace=Path(cfg.workspace),
        repo_url=cfg.dev_env_repo,
    )
