"""``otaguard verify``'s options, declared once, and a parser that needs no click.

Why: whole-process ``otaguard verify`` time is what fleets and CI pay per image, and
importing click costs about as much as verifying a 16 MiB image (bench/RESULTS.md).
The click command (``otaguard.cli.images``) is built from :data:`VERIFY_OPTIONS`, and
:func:`parse` reads the same table into the same frozen
:class:`~otaguard.cli.verifying.VerifyArgs`. :func:`parse` accepts only plainly written
command lines -- known long options, ``--opt VALUE``, one IMAGE -- and returns ``None``
for anything else (``--help``, ``--opt=value``, a repeated single-value option, a bad
value, a directory), so that click parses it and reports errors. It is therefore
never a second opinion on what a command line means: tests/cli/test_verify_args.py
checks that whatever it accepts, click parses to the very same values.

Standard library only, and nothing heavy: the console entry calls :func:`plain_image`
before the prefetch (``otaguard.image.prefetch``) forks, and every millisecond before
the fork is added to a large verification; :class:`VerifyArgs` (a dataclass, and
dataclasses cost ~12 ms to import) is built by :func:`parse`, after the fork.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~8 ms to import: keep it off the start-up path
if TYPE_CHECKING:
    from typing import Any

    from otaguard.cli.verifying import VerifyArgs

#: What ``--format`` accepts on the commands that read an image.
FORMATS_READ = ("auto", "native", "mcuboot")


class Option:
    """One option: ``kind`` is ``path``, ``text``, ``int``, ``choice`` or ``flag``."""

    __slots__ = ("choices", "default", "dest", "flag", "help", "kind", "multiple", "show_default")

    def __init__(
        self,
        flag: str,
        dest: str,
        kind: str,
        help: str,
        *,
        multiple: bool = False,
        default: Any = None,
        choices: tuple[str, ...] = (),
        show_default: bool = False,
    ) -> None:
        self.flag, self.dest, self.kind, self.help = flag, dest, kind, help
        self.multiple, self.default, self.choices = multiple, default, choices
        self.show_default = show_default

    def initial(self) -> Any:
        if self.multiple:
            return ()
        return False if self.kind == "flag" else self.default


#: Shared by ``verify`` and ``extract`` (which adds OUT).
VERIFY_OPTIONS = (
    Option(
        "--trusted-key", "trusted_keys", "path", "Trusted public key (repeatable).", multiple=True
    ),
    Option(
        "--trusted-root",
        "trusted_roots",
        "path",
        "Trusted root CA certificate: the image's chain must lead to it.",
        multiple=True,
    ),
    Option(
        "--crl", "crls", "path", "Certificate revocation list to apply (repeatable).", multiple=True
    ),
    Option(
        "--region", "region", "text", "The verifying device's region (checked against the chain)."
    ),
    Option(
        "--threshold",
        "threshold",
        "int",
        "Distinct trusted keys that must have signed.",
        default=1,
        show_default=True,
    ),
    Option("--hardware-id", "hardware_id", "text", "Require the image to run on this hardware id."),
    Option(
        "--min-security-counter",
        "min_security_counter",
        "int",
        "Require a security counter of at least N (anti-rollback).",
    ),
    Option(
        "--min-version",
        "min_version",
        "text",
        "Require at least this version (semver; MCUboot: major.minor.revision).",
    ),
    Option(
        "--format",
        "fmt",
        "choice",
        "Image format.",
        choices=FORMATS_READ,
        default="auto",
        show_default=True,
    ),
)
#: ``verify`` only.
JSON_OPTION = Option("--json", "as_json", "flag", "Print the result as JSON on stdout.")
_BY_FLAG = {o.flag: o for o in (*VERIFY_OPTIONS, JSON_OPTION)}


def _clean_path(value: str) -> bool:
    """What click.Path(dir_okay=False) would take without a word: not an existing directory."""
    return not os.path.isdir(value) and (not os.path.exists(value) or os.access(value, os.R_OK))


def _value(option: Option, text: str) -> Any:
    """The converted value, or ``None`` when click should see (and report on) it."""
    if text.startswith("-"):
        return None
    if option.kind == "int":
        try:
            return int(text)
        except ValueError:
            return None
    if option.kind == "choice":
        return text if text in option.choices else None
    if option.kind == "path" and not _clean_path(text):
        return None
    return text


def _scan(argv: list[str]) -> dict[str, Any] | None:
    """``verify``'s parameters by click's names, or ``None`` to let click parse."""
    if not argv or argv[0] != "verify":
        return None
    values: dict[str, Any] = {o.dest: o.initial() for o in _BY_FLAG.values()}
    seen: set[str] = set()
    images: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if not arg.startswith("-"):
            images.append(arg)
            continue
        option = _BY_FLAG.get(arg)
        if option is None or (arg in seen and not option.multiple):
            return None  # unknown, --help, --x=y, -- , a single-value option twice
        seen.add(arg)
        if option.kind == "flag":
            values[option.dest] = True
            continue
        value = _value(option, next(args, "-"))
        if value is None:
            return None
        values[option.dest] = (*values[option.dest], value) if option.multiple else value
    if len(images) != 1 or not _clean_path(images[0]):
        return None
    values["image"] = images[0]
    return values


def plain_image(argv: list[str]) -> str | None:
    """The IMAGE of a plain ``verify`` command line (one :func:`parse` takes), else ``None``."""
    values = _scan(argv)
    return None if values is None else str(values["image"])


def parse(argv: list[str]) -> VerifyArgs | None:
    """``verify``'s parameters as click would pass them, or ``None`` to let click parse.

    ``argv`` is the whole command line after the program name, starting with ``verify``.
    """
    values = _scan(argv)
    if values is None:
        return None
    from otaguard.cli.verifying import VerifyArgs

    return VerifyArgs(**values)
