"""What every script in ``train/`` and ``bench/`` shares on its command line: the entry wrapper that turns
bad input into one line and exit status 2, a parser whose errors are one line too, argument types with
bounds, and the checks a run makes before any long work (output folders writable, input files there,
W&B credentials), and writing a figure.

Bad input is an error that names the argument, the value and what is allowed; a script's ``__main__``
block is ``run_main(main)``: a :class:`~mec_env.errors.MECOffloadError` (and the other bad-input errors
of :func:`is_bad_input`) becomes ``script.py: error: ...`` on stderr and exit status 2, as argparse's own
errors; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import math
import netrc
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, NoReturn
from urllib.parse import urlparse

from mec_env.errors import ConfigError, MECOffloadError
from mec_env.seeds import HELD_OUT

CPU_COUNT = os.cpu_count() or 1
# Upper bounds of the counts a user gives; each says why in the help of the setting that uses it.
MAX_THREADS = max(2, CPU_COUNT)  # torch threads past the cores only contend (2 always allowed)
MAX_WORKERS = 4 * CPU_COUNT  # worker processes: past a few per core they only contend and hold memory
MAX_ENVS = 1024  # environments of one rollout: each holds its own state and adds per-step overhead
MAX_HIDDEN = 4096  # network width: a 4096 x 4096 layer is already 64 MiB of float32 weights
MAX_EPISODES = HELD_OUT.size  # held-out episodes / seeds: the held-out seed range (mec_env.seeds) holds this many
MAX_SLOTS = 10**6  # slots of one episode: every slot's trace is kept in memory
MAX_RUNS = 100_000  # Monte Carlo draws per point (the paper: 500): every draw's row is kept in memory

WHY_THREADS = f"at most {MAX_THREADS}, the machine's cores: more threads only contend"
WHY_WORKERS = f"at most {MAX_WORKERS} = 4 x the machine's {CPU_COUNT} cores: more processes only contend"
WHY_ENVS = f"at most {MAX_ENVS}: each env holds its own state; more only add memory and per-step overhead"
WHY_HIDDEN = f"at most {MAX_HIDDEN}: a {MAX_HIDDEN} x {MAX_HIDDEN} layer is 64 MiB of weights"
WHY_EPISODES = f"at most {MAX_EPISODES:,}, the held-out seeds {HELD_OUT.start:,} + k: more would reuse other seeds"

# OSErrors that are the user's or the machine's (a missing input, a read-only or full disk), not a bug
_BAD_OS_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                  errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def is_bad_input(err: BaseException) -> bool:
    """True for an error a user causes: the project's typed errors, a missing or unwritable file."""
    if isinstance(err, MECOffloadError):
        return True
    return isinstance(err, OSError) and err.errno in _BAD_OS_ERRNOS


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (its lines joined by '; '), or its type's name when it has none."""
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


def run_main(main: Callable[..., Any], argv: list[str] | None = None, prog: str | None = None) -> NoReturn:
    """Run a script's ``main(argv)`` as its command line: bad input (:func:`is_bad_input`, or a
    ``sys.exit("message")``) is one line ``prog: error: ...`` on stderr and exit status 2; a bug keeps
    its traceback; an int that ``main`` returns is the exit status (anything else: 0)."""
    prog = prog or Path(sys.argv[0]).name
    try:
        result = main() if argv is None else main(argv)
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        message = stop.code.strip()
        _fail(prog, message.split(": error: ", 1)[1] if message.startswith(f"{prog}: error: ") else message)
    except Exception as err:
        if not is_bad_input(err):
            raise
        _fail(prog, one_line(err))
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)


def _fail(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


class ScriptParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``prog: error: ...``, exit 2) like the
    wrapper's, without the usage block; ``--help`` shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def script_parser(doc: str | None) -> ScriptParser:
    """The parser of a script: its module docstring as the description, kept as written."""
    return ScriptParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


# argparse types: each raises ArgumentTypeError, which argparse reports as "argument --NAME: ..."

def count(low: int = 1, high: int = MAX_EPISODES) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; expected an integer in [{low}, {high:,}]")
        return value

    parse.__name__ = "count"
    return parse


def number(low: float = -math.inf, high: float = math.inf, open_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in ``[low, high]`` (``(low, high]`` with ``open_low``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        low_ok = value > low if open_low else value >= low
        if not (math.isfinite(value) and low_ok and value <= high):
            where = (f"in {'(' if open_low else '['}{low:g}, {high:g}]" if math.isfinite(high)
                     else f"{'>' if open_low else '>='} {low:g}")
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; expected a finite number {where}")
        return value

    parse.__name__ = "number"
    return parse


probability = number(0.0, 1.0)


def saved_model(text: str) -> Path:
    """An argparse type: a saved SB3 model, ``PATH`` or ``PATH.zip`` (as :func:`agents.model_zip.load_model`)."""
    if not is_saved_model(text):
        raise argparse.ArgumentTypeError(f"{text!r}: no saved model there (expected an SB3 .zip)")
    return Path(text)


def is_saved_model(path: str | Path) -> bool:
    """``path`` (or ``path.zip``) is an existing file, found as :func:`agents.model_zip.load_model` finds it."""
    from agents.model_zip import model_zip_path

    return model_zip_path(path).is_file()


def _existing(exists: Callable[[Path], bool], what: str) -> Callable[[str], Path]:
    """An argparse type: a path for which ``exists(path)`` holds, else ``'TEXT': no such {what}``."""
    def parse(text: str) -> Path:
        path = Path(text)
        if not exists(path):
            raise argparse.ArgumentTypeError(f"{text!r}: no such {what}")
        return path
    return parse


existing_dir = _existing(Path.is_dir, "folder")
existing_path = _existing(Path.exists, "file or folder")  # e.g. a checkpoint folder


def env_id(text: str) -> str:
    """An argparse type: one of this package's environment ids."""
    from mec_env.registration import ENV_IDS

    if text not in ENV_IDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not an environment of this package; expected one of "
                                         + ", ".join(ENV_IDS))
    return text


def _as_argument_type(check: Callable[[Path, str], Path]) -> Callable[[str], Path]:
    def parse(text: str) -> Path:
        try:
            return check(Path(text), "")
        except ConfigError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {err.allowed}") from None

    return parse


def check_output_dir(path: str | Path, name: str) -> Path:
    """``path`` as a folder this process can create or write into, checked before any long work.

    Probes with a temporary file in ``path`` or, when it does not exist yet, in its nearest existing
    parent (where it would be created); the probe file is removed.

    :raises ConfigError: naming ``name`` when ``path`` or a parent is a file, or the place is read-only.
    """
    path = Path(path)
    where = path
    while not where.exists() and where.parent != where:  # the folder mkdir would create it in
        where = where.parent
    if not where.is_dir():
        raise ConfigError(name, str(path), f"a folder path ({where} is a file)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(name, str(path), f"a folder this process can write ({where}: {err.strerror})") from None
    return path


def check_output_file(path: str | Path, name: str) -> Path:
    """``path`` as a file this process can write (atomically, through its folder): not a folder, and its
    folder writable (:func:`check_output_dir`)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(name, str(path), "a file path (this is a folder)")
    check_output_dir(path.parent, name)
    return path


output_dir = _as_argument_type(check_output_dir)
output_dir.__name__ = "output_dir"
output_file = _as_argument_type(check_output_file)
output_file.__name__ = "output_file"

WANDB_MODES = ("online", "offline", "disabled", "shared")


def wandb_api_key() -> str | None:
    """The W&B API key this process would log in with: ``WANDB_API_KEY``, else the netrc entry of the
    W&B host (``wandb login`` writes it), else None."""
    key = os.environ.get("WANDB_API_KEY")
    if key:
        return key
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        entry = netrc.netrc(os.environ.get("NETRC") or None).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry and entry[2] else None


def check_wandb(enabled: bool) -> None:
    """Before any work: a W&B run (``wandb=true``) needs a known ``WANDB_MODE`` (default offline) and,
    online, an API key; without one wandb would stop the run at its start with a prompt or a traceback.

    :raises ConfigError: naming ``WANDB_MODE``.
    """
    if not enabled:
        return
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode not in WANDB_MODES:
        raise ConfigError("WANDB_MODE", mode, "one of " + ", ".join(WANDB_MODES))
    if mode in ("online", "shared") and wandb_api_key() is None:
        raise ConfigError("WANDB_MODE", mode, "offline or disabled, or a W&B API key for online logging "
                          "(WANDB_API_KEY, or `wandb login`)", kind="no W&B API key")


def check_run_config(cfg: Any) -> None:
    """What a training config needs before any long work: its ``run_dir`` writable, its ``init_model``
    (when set) an existing file, W&B credentials when ``wandb`` is on (:func:`check_wandb`)."""
    if getattr(cfg, "run_dir", None):
        check_output_dir(cfg.run_dir, "run_dir")
    init = getattr(cfg, "init_model", "")
    if init and not is_saved_model(init):
        raise ConfigError("init_model", init, "an existing saved model (.zip), or '' for none")
    check_wandb(bool(getattr(cfg, "wandb", False)))


def save_png(fig: Any, path: str | Path) -> None:
    """A matplotlib figure written to ``path`` as PNG (atomically: a kill leaves no half file), then closed."""
    import matplotlib.pyplot as plt

    from mec_env.io import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


__all__ = ["run_main", "script_parser", "ScriptParser", "is_bad_input", "count", "number", "probability",
           "saved_model", "is_saved_model", "existing_dir", "existing_path", "env_id", "output_dir",
           "output_file", "check_output_dir", "check_output_file", "check_wandb", "check_run_config", "save_png",
           "MAX_THREADS", "MAX_WORKERS", "MAX_ENVS", "MAX_HIDDEN", "MAX_EPISODES", "MAX_SLOTS", "MAX_RUNS"]
