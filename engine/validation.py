"""Input validation and safe output writing shared by every entry point (CLI, tools, viewer, API).

What is here (issue #18):

- error types, one per kind of input, all ``ValueError`` subclasses whose message names the
  file or argument and what is wrong (the CLI prints them as one line and exits 2):
  :class:`InputError` (base), :class:`ArgumentError` (a command-line / API argument),
  :class:`InputFileError` (a file's content), :class:`OutputError` (an output that would
  overwrite an input or a file the command did not create), :class:`NonFiniteError` (NaN / inf
  in a result that is about to be written or in a training run);
- argparse types with bounds: :func:`finite_float` and :func:`int_range`, and
  :func:`check_number` for API arguments;
- :func:`read_json_file`: a size-capped JSON reader that refuses deep nesting and NaN/Infinity;
- :func:`check_finite_image`: every rendered image is checked before it is written;
- :class:`OutputSet`: outputs are first written under temporary names in their final folder and
  moved into place (``os.replace``) only when every one of them was written; a command never
  replaces one of its inputs, and never replaces an existing file it did not create (a
  relit-hands summary JSON, or a file that such a summary lists) unless ``overwrite=True``
  (``--overwrite``);
- :func:`resolve_inside`: a path named inside a folder (capture files, viewer script outputs)
  must resolve inside that folder, symlinks included;
- :class:`OutputFolder`: a command's output folder (eval reports, light libraries, student sets,
  training runs, light-stage captures) is refused when it is an input, a relit-hands folder of
  another kind, or a non-empty folder relit-hands did not write (unless ``overwrite=True``);
  relit-hands marks its folders with :data:`FOLDER_MARKER`; :func:`write_atomic` /
  :func:`write_text_atomic` write one file under a temporary name and ``os.replace`` it.

Documented limits (also in the README's reliability section): JSON inputs (pose / scene files,
viewer scripts, capture manifests) at most :data:`MAX_JSON_BYTES` and :data:`MAX_JSON_DEPTH`
levels of nesting; weight-file metadata is bounded before anything is allocated (see
``student.check_student_meta`` and ``tools.teacher.check_teacher_config``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np

MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 32
SUMMARY_MARKER = "relit-hands"


class InputError(ValueError):
    """Bad user input; the message names the argument or file and what is wrong."""


class ArgumentError(InputError):
    """A command-line or API argument out of its allowed range (or not a number)."""


class InputFileError(InputError):
    """A file whose content cannot be used (wrong structure, too large, too deep, NaN ...)."""


class OutputError(InputError):
    """An output path that would replace an input or a file the command did not create."""


class NonFiniteError(InputError):
    """NaN or infinite values in a result (a rendered image, a training loss, weights)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as ONE line (``prog: error: ...``) and exits 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- numbers


def check_number(value, name: str, lo: float | None = None, hi: float | None = None, *,
                 integer: bool = False):
    """``value`` as a finite float (or int with ``integer``) within ``[lo, hi]``; else
    :class:`ArgumentError` naming ``name``."""
    if isinstance(value, bool):
        raise ArgumentError(f"{name}: expected a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ArgumentError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ArgumentError(f"{name}: must be a finite number, got {value!r}")
    if integer:
        if v != int(v):
            raise ArgumentError(f"{name}: expected an integer, got {value!r}")
        v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ArgumentError(f"{name}: {value!r} is out of range ({_range_text(lo, hi)})")
    return v


def _range_text(lo, hi) -> str:
    def g(x):  # integers exactly (an int_range bound), other numbers short
        return str(x) if isinstance(x, int) else f"{x:g}"

    if lo is not None and hi is not None:
        return f"{g(lo)} .. {g(hi)}"
    return f">= {g(lo)}" if lo is not None else f"<= {g(hi)}"


def finite_float(lo: float | None = None, hi: float | None = None):
    """argparse ``type=``: a finite float within ``[lo, hi]`` (NaN / inf / out of range refused)."""

    def parse(text: str) -> float:
        try:
            return check_number(text, "value", lo, hi)
        except ArgumentError as e:
            raise argparse.ArgumentTypeError(str(e).replace("value: ", "", 1)) from None

    parse.__name__ = "finite number"
    return parse


def int_range(lo: int | None = None, hi: int | None = None):
    """argparse ``type=``: an integer within ``[lo, hi]``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{v} is out of range ({_range_text(lo, hi)})")
        return v

    parse.__name__ = "integer"
    return parse


# --------------------------------------------------------------------------- JSON


def _depth(obj, limit: int) -> int:
    """Nesting depth of a parsed JSON value (iterative; stops counting past ``limit``)."""
    stack, deepest = [(obj, 1)], 0
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return deepest


def _reject_constant(c):
    raise ValueError(f"{c} is not allowed (use finite numbers)")


def parse_json_text(text: str, label: str, *, max_depth: int = MAX_JSON_DEPTH):
    """Parse JSON text; :class:`InputFileError` naming ``label`` for syntax errors, NaN /
    Infinity literals, or nesting deeper than ``max_depth``."""
    # cheap pre-check: a run of brackets deeper than the limit fails without recursing
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > max_depth:
                    raise InputFileError(f"{label}: JSON nested deeper than {max_depth} levels")
        elif ch in "]}":
            depth -= 1
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InputFileError(f"{label}: JSON nested too deeply") from None
    except ValueError as e:
        raise InputFileError(f"{label}: not valid JSON ({e})") from None
    if _depth(obj, max_depth) > max_depth:
        raise InputFileError(f"{label}: JSON nested deeper than {max_depth} levels")
    return obj


def read_json_file(path, *, what: str = "JSON file", max_bytes: int = MAX_JSON_BYTES,
                   max_depth: int = MAX_JSON_DEPTH):
    """Read and parse a JSON file with a size cap (checked before reading) and a depth cap."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputFileError(f"{path}: {what} not found") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if not path.is_file():
        raise InputFileError(f"{path}: {what} is not a regular file")
    if size > max_bytes:
        raise InputFileError(f"{path}: {what} is {size} bytes; the limit is {max_bytes}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputFileError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: {what} is not UTF-8 text") from None
    return parse_json_text(text, str(path), max_depth=max_depth)


# --------------------------------------------------------------------------- images


def check_finite_image(img, what: str):
    """Raise :class:`NonFiniteError` if the float image ``img`` holds NaN or inf; return it."""
    if img is None:
        return img
    a = np.asarray(img)
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        n = int((~np.isfinite(a)).sum())
        raise NonFiniteError(f"{what}: the rendered image has {n} NaN/infinite value(s); nothing was written "
                             f"(check exposure, environment radiance and weights)")
    return img


# --------------------------------------------------------------------------- outputs


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _summary_lists(summary_path: Path, target: Path) -> bool:
    """True when ``summary_path`` is a relit-hands summary JSON that names ``target`` as an output."""
    try:
        if not summary_path.is_file() or summary_path.stat().st_size > MAX_JSON_BYTES:
            return False
        d = parse_json_text(summary_path.read_text(), str(summary_path))
    except (OSError, UnicodeDecodeError, InputFileError):
        return False
    if not is_relit_summary(d):
        return False
    names = []
    for k in ("output", "exr", "screenshot", "outputs", "files"):
        v = d.get(k)
        names.extend(v if isinstance(v, list) else [v])
    for n in names:
        if isinstance(n, str) and n and (Path(n).name == target.name):
            return True
    return False


def is_relit_summary(d) -> bool:
    """A JSON object written by a relit-hands command (marker key, or a 'command' line)."""
    if not isinstance(d, dict):
        return False
    if d.get("written_by") == SUMMARY_MARKER:
        return True
    cmd = d.get("command")
    return isinstance(cmd, str) and cmd.startswith("relit-hands")


def created_by_relit_hands(path: Path) -> bool:
    """Whether an existing file looks like one a relit-hands command wrote: a summary JSON, or a
    file listed by the summary JSON beside it."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            if path.stat().st_size <= MAX_JSON_BYTES:
                return is_relit_summary(parse_json_text(path.read_text(), str(path)))
        except (OSError, UnicodeDecodeError, InputFileError):
            return False
        return False
    return _summary_lists(path.with_suffix(".json"), path)


class OutputSet:
    """Plan, then atomically write, a command's output files.

    ``OutputSet(inputs, overwrite, owned)``; ``add(path, writer, label)`` checks the path at once
    (:class:`OutputError` if it is one of ``inputs``, appears twice, is a folder, or exists and
    was not written by relit-hands -- nor is one of ``owned``, the files a tool's own manifest
    lists -- while ``overwrite`` is False); ``commit()`` calls every
    ``writer(tmp_path)`` (a temporary name in the final folder with the same suffix), and only
    when all succeeded moves them into place with ``os.replace``. On any error the temporaries
    are removed and no output changes.
    """

    def __init__(self, inputs=(), overwrite: bool = False, owned=()):
        self.inputs = [Path(p) for p in inputs if p]
        self.overwrite = bool(overwrite)
        self.owned = [Path(p) for p in owned if p]  # files the command's own manifest says it wrote
        self.items: list = []

    def check(self, path, label: str = "output") -> Path:
        path = Path(path)
        for i in self.inputs:
            if _same_file(path, i):
                raise OutputError(f"{label} {path}: is also an input of this command ({i}); choose another name")
        for p, _, lab in self.items:
            if _same_file(p, path):
                raise OutputError(f"{label} {path}: the same file is also the {lab}; choose another name")
        if path.exists() or path.is_symlink():
            if path.is_dir():
                raise OutputError(f"{label} {path}: is a folder")
            if not self.overwrite and not created_by_relit_hands(path) \
                    and not any(_same_file(path, o) for o in self.owned):
                raise OutputError(f"{label} {path}: exists and was not written by relit-hands; "
                                  f"pass --overwrite to replace it")
        return path

    def add(self, path, writer, label: str = "output") -> Path:
        path = self.check(path, label)
        self.items.append((path, writer, label))
        return path

    def commit(self) -> list:
        temps = []
        try:
            for path, writer, label in self.items:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
                temps.append((tmp, path))
                writer(tmp)
            for tmp, path in temps:
                os.replace(tmp, path)
        except BaseException:
            for tmp, _ in temps:
                try:
                    tmp.unlink()
                except OSError:
                    pass
            raise
        return [p for _, p in temps]


# --------------------------------------------------------------------------- paths


def resolve_inside(folder, name, *, what: str = "path", explicit: bool = False) -> Path:
    """``folder / name`` resolved (symlinks followed); :class:`InputError` if it leaves ``folder``.

    ``explicit=True`` (the user typed the path on the command line) skips the check."""
    folder = Path(folder)
    p = Path(name)
    full = p if p.is_absolute() else folder / p
    if explicit:
        return full
    root = Path(os.path.realpath(folder))
    real = Path(os.path.realpath(full))
    if real != root and root not in real.parents:
        raise InputError(f"{what} {name}: resolves outside {folder} ({real}); "
                         f"only paths inside the folder are allowed")
    return full


# --------------------------------------------------------------------------- output folders

FOLDER_MARKER = ".relit-hands.json"


def _is_temp_name(name: str) -> bool:
    """A temporary name of :func:`write_atomic` / :class:`OutputSet` (``.<stem>.tmp<pid><suffix>``)."""
    return name.startswith(".") and ".tmp" in name


def write_atomic(path, writer) -> Path:
    """``writer(tmp)`` writes a temporary file beside ``path`` (same suffix), then ``os.replace``
    moves it into place: ``path`` is either its old content or the complete new one, never a
    partial file. On error the temporary is removed and ``path`` is unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return path


def write_text_atomic(path, text: str) -> Path:
    """:func:`write_atomic` of a text file."""
    return write_atomic(path, lambda p: Path(p).write_text(text))


def read_folder_marker(folder) -> dict | None:
    """The relit-hands marker of an output folder (``{'written_by', 'kind'}``), or None."""
    p = Path(folder) / FOLDER_MARKER
    try:
        if not p.is_file() or p.stat().st_size > 65536:
            return None
        d = parse_json_text(p.read_text(), str(p))
    except (OSError, UnicodeDecodeError, InputFileError):
        return None
    return d if isinstance(d, dict) and d.get("written_by") == SUMMARY_MARKER and isinstance(d.get("kind"), str) \
        else None


class OutputFolder:
    """A command's output folder: checked before anything is computed, created on first write.

    ``OutputFolder(path, kind, overwrite=..., inputs=..., recognise=...)`` raises
    :class:`OutputError` at once when ``path``

    - is a file, or is one of ``inputs`` (folders or files: the folder of an input is never an
      output folder, ``--overwrite`` or not) or holds one of the input files directly;
    - is a relit-hands output folder of another ``kind`` (its :data:`FOLDER_MARKER` says so: a
      train-student run is no train-teacher run), ``--overwrite`` or not;
    - is not empty and is neither marked as this ``kind`` nor recognised by ``recognise(path)``
      (the tool's own manifest, for folders written before the marker existed), unless
      ``overwrite``.

    An existing folder of this kind is accepted as it is: re-running replaces the command's own
    files, and commands that resume (training runs, light-stage captures) keep resuming.
    :meth:`create` makes the folder and writes the marker; :meth:`write` / :meth:`write_text`
    write one file atomically (:func:`write_atomic`).
    """

    def __init__(self, path, kind: str, *, overwrite: bool = False, inputs=(), label: str = "--out",
                 recognise=None):
        self.path = Path(path)
        self.kind = kind
        self.label = label
        self._created = False
        p = self.path
        for i in inputs:
            if not i:
                continue
            i = Path(i)
            if not i.exists():
                continue
            if _same_file(p, i) or (i.is_file() and p.is_dir() and _same_file(p, i.parent)):
                raise OutputError(f"{label} {p}: is {'also an input' if _same_file(p, i) else 'the folder of the input'}"
                                  f" {i} of this command; choose another output folder")
        if p.is_symlink() and not p.exists():
            raise OutputError(f"{label} {p}: is a broken symbolic link")
        if p.exists() and not p.is_dir():
            raise OutputError(f"{label} {p}: is a file, not a folder")
        if not p.is_dir():
            return
        marker = read_folder_marker(p)
        if marker is not None:
            if marker["kind"] != kind:
                raise OutputError(f"{label} {p}: holds relit-hands {marker['kind']} output, not {kind} output; "
                                  f"choose another output folder")
            return
        try:
            entries = [e for e in os.listdir(p) if not _is_temp_name(e)]
        except OSError as e:
            raise OutputError(f"{label} {p}: cannot list the folder ({e.strerror or e})") from None
        if not entries or overwrite:
            return
        try:
            ours = bool(recognise(p)) if recognise is not None else False
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise OutputError(f"{label} {p}: the folder is not empty and was not written by relit-hands {kind} "
                              f"(it holds {entries[0]!r}{' ...' if len(entries) > 1 else ''}); choose a new or "
                              f"empty folder, or pass --overwrite to write into it")

    def create(self) -> Path:
        """Make the folder (parents too) and write its marker (once)."""
        if not self._created:
            self.path.mkdir(parents=True, exist_ok=True)
            m = read_folder_marker(self.path)
            if m is None or m["kind"] != self.kind:
                write_text_atomic(self.path / FOLDER_MARKER,
                                  json.dumps({"written_by": SUMMARY_MARKER, "kind": self.kind}) + "\n")
            self._created = True
        return self.path

    def write(self, name, writer) -> Path:
        """Write ``self.path / name`` atomically with ``writer(tmp_path)``."""
        self.create()
        return write_atomic(self.path / name, writer)

    def write_text(self, name, text: str) -> Path:
        self.create()
        return write_text_atomic(self.path / name, text)


def json_file_says(path, **expected) -> bool:
    """Whether ``path`` is a (size-capped) JSON object whose keys hold ``expected`` values: for
    ``recognise`` functions (a tool's own manifest / summary)."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
            return False
        d = parse_json_text(path.read_text(), str(path))
    except (OSError, UnicodeDecodeError, InputFileError):
        return False
    return isinstance(d, dict) and all(d.get(k) == v for k, v in expected.items())
