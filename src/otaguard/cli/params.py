"""Click options that several commands declare alike, declared once so that they agree.

Why: a flag spelt two ways (``--load-addr`` and ``--load-address`` once) or a ``--json``
that one command lacks is what a user trips on; one definition per option keeps the
name, the destination and the help the same everywhere.
"""

from __future__ import annotations

import click

#: ``--json``: the result as one JSON object on stdout (``as_json``).
JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
#: ``--ca DIR``: an existing CA directory (``ca_dir``).
CA_DIR = click.option(
    "--ca", "ca_dir", required=True, type=click.Path(file_okay=False, exists=True)
)
#: ``--out-dir DIR``: where a new CA or signer directory is made (``out_dir``).
OUT_DIR = click.option("--out-dir", required=True, type=click.Path(file_okay=False))
