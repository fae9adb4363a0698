"""The output folder: what may be replaced, and replacing it atomically.

Rules (DESIGN.md, "The emitted folder"):
- OUTDIR may be new, an empty folder, or (with --force) a folder holding an
  earlier export, i.e. its MARKER file lists exactly the files in it, with
  their contents; a folder with anything else in it is the user's and is
  never replaced.
- Never the current folder or one of its ancestors, the home folder, `/`,
  or a folder holding the model, the calibration data or another input.
- A symbolic link as OUTDIR is refused: following it would write outside
  the named path, replacing it would drop the user's link.
- The new folder is built beside OUTDIR (`.OUTDIR.new-*`), the old one is
  renamed aside (`.OUTDIR.old-*`), the new one renamed in, then the old one
  removed.  The two renames run with SIGINT/SIGTERM/SIGHUP held back, and a
  failed second rename puts the old folder back: any failure leaves the old
  export or the new one, never a mix.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

from .errors import ExportError

MARKER = ".k2m-export"
SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def step(name: str) -> None:
    """Called before each step of a replacement; tests inject failures here."""


def tool_version() -> str:
    try:
        from importlib.metadata import version
        return version("k2m-exporter")
    except Exception:  # noqa: BLE001 - a source checkout without metadata
        return "0+source"


def listing(folder: Path) -> dict:
    """{relative path: sha256} of every file below `folder`, marker excepted."""
    found = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if rel == MARKER:
            continue
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            found[rel] = "not a regular file"
        elif p.is_file():
            found[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def marker_text(folder: Path) -> str:
    lines = [f"k2m-exporter {tool_version()}: this folder is an export; export-model "
             f"--force replaces it only while it holds exactly these files"]
    lines += [f"{digest}  {rel}" for rel, digest in listing(folder).items()]
    return "\n".join(lines) + "\n"


def earlier_export_problem(folder: Path):
    """Why `folder` is not an unchanged earlier export, or None."""
    marker = folder / MARKER
    if not marker.is_file() or marker.is_symlink():
        return "it holds no earlier k2m export (no .k2m-export file)"
    try:
        recorded = {}
        lines = marker.read_text(encoding="utf-8").splitlines()
        if not lines or not lines[0].startswith("k2m-exporter "):
            return "its .k2m-export file is not one this tool writes"
        for line in lines[1:]:
            digest, _, rel = line.partition("  ")
            recorded[rel] = digest
    except (OSError, UnicodeDecodeError):
        return "its .k2m-export file cannot be read"
    now = listing(folder)
    added = sorted(set(now) - set(recorded))
    changed = sorted(r for r in now if r in recorded and now[r] != recorded[r])
    if added or changed:
        names = ", ".join(added[:3] + changed[:3])
        return (f"it holds files the tool did not write or that changed since the export "
                f"({names})")
    return None


def resolve(path: Path) -> Path:
    return Path(os.path.realpath(path))


class OutputFolder:
    """OUTDIR, checked before any work and replaced atomically at the end."""

    def __init__(self, out_dir, force: bool, inputs=()):
        self.path = Path(out_dir)
        self.force = force
        self.inputs = [resolve(Path(p)) for p in inputs if p is not None]
        self.existed = False
        self.created: list = []   # parent folders made for it, removed on failure

    def check(self) -> None:
        """Refuse, before anything is loaded, what may not be replaced."""
        out, shown = self.path, self.path
        if out.is_symlink():
            raise ExportError(f"output folder '{shown}' is a symbolic link (to "
                              f"'{os.readlink(out)}'); give the folder it points to, or a "
                              f"new name, so nothing is written outside the path you named")
        real = resolve(out)
        cwd = resolve(Path.cwd())
        if real == cwd or real in cwd.parents:
            what = "the current folder" if real == cwd else "an ancestor of the current folder"
            raise ExportError(f"output folder '{shown}' is {what}, which export-model never "
                              f"replaces; export into a new folder, e.g. -o build/model")
        if real == resolve(Path.home()) or real == Path(real.anchor):
            raise ExportError(f"output folder '{shown}' is the home folder or '/', which "
                              f"export-model never replaces; give a new folder")
        for p in self.inputs:
            if p == real or real in p.parents:
                raise ExportError(f"output folder '{shown}' holds '{p}', an input of this "
                                  f"export, which export-model never deletes; export into "
                                  f"another folder")
        if not out.exists():
            return
        self.existed = True
        if not out.is_dir():
            raise ExportError(f"output folder '{shown}' exists and is a file; give a folder name")
        if not any(out.iterdir()):
            return
        if not self.force:
            raise ExportError(f"output folder '{shown}' already exists and is not empty; "
                              f"pass --force to replace it")
        problem = earlier_export_problem(out)
        if problem:
            raise ExportError(f"output folder '{shown}' is not replaced even with --force: "
                              f"{problem}; export into another folder or empty it yourself")

    def temp_folder(self) -> Path:
        """An empty folder beside OUTDIR, made before the model loads so an
        unwritable destination is reported first."""
        parent = resolve(self.path.parent)
        missing = [p for p in [parent, *parent.parents] if not p.exists()]
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.created = missing
            return Path(tempfile.mkdtemp(prefix=f".{self.path.name}.new-", dir=parent))
        except OSError as e:
            raise ExportError(f"cannot write output folder '{self.path}' in '{parent}': "
                              f"{e.strerror}") from None

    def discard(self, tmp: Path | None) -> None:
        """After a failure: the temporary folder and the parents made for it."""
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        for p in self.created:
            try:
                p.rmdir()
            except OSError:
                break
        self.created = []

    def replace_with(self, tmp: Path, written: list | None = None) -> list:
        """Move the complete folder `tmp` into place as OUTDIR; returns
        warnings (an old export that could not be removed)."""
        out = self.path
        try:
            step("marker")
            (tmp / MARKER).write_text(marker_text(tmp), encoding="utf-8")
            tmp.chmod(0o755)
        except OSError as e:
            raise ExportError(f"cannot write output folder '{out}': {e.strerror}") from None
        aside = None
        blocked = hasattr(signal, "pthread_sigmask")
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            if self.existed and out.exists():
                self.check()  # what it holds now, not what it held at the start
                step("aside")
                aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=tmp.parent))
                os.rename(out, aside / "old")
            try:
                step("swap")
                os.rename(tmp, out)  # fails on a non-empty folder made meanwhile
            except BaseException:
                if aside is not None:
                    self._restore(aside)
                raise
            self.created = []
            if written is not None:
                written.append(str(out))
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise ExportError(f"output folder '{out}' appeared and was filled while "
                                  f"exporting; it was left as it is") from None
            raise ExportError(f"cannot write output folder '{out}': {e.strerror}") from None
        finally:
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        if aside is None:
            return []
        try:
            step("cleanup")
            shutil.rmtree(aside)
            return []
        except OSError as e:
            return [f"the earlier export was moved to '{aside / 'old'}' and could not be "
                    f"removed ({e.strerror}); delete it yourself"]

    def _restore(self, aside: Path) -> None:
        """Put the earlier export back after a failed swap."""
        try:
            os.rename(aside / "old", self.path)
            aside.rmdir()
        except OSError as e:
            raise ExportError(f"cannot write output folder '{self.path}', and the earlier "
                              f"export could not be put back ({e.strerror}): it is in "
                              f"'{aside / 'old'}'") from None
