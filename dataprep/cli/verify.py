"""``dataprep verify``: read every record of a store and report each problem."""

from __future__ import annotations

import click

from .options import common_options, json_opt, max_pixels_opt, root_opt
from .running import progress


@click.command("verify")
@click.argument("store", required=False)
@click.option(
    "--list",
    "list_path",
    default=None,
    metavar="LIST",
    help="Also check the store holds exactly LIST's entries, in order, with its labels.",
)
@root_opt
@json_opt
@max_pixels_opt
@common_options
def verify_cmd(store, list_path, root, as_json):
    """Check every record of STORE: it decodes, shapes agree, labels are sane, and (for
    stores dataprep wrote) the manifest's count and per-record checksums match, which
    catches unfinished writes, truncated HDF5 files and records changed after writing.

    Prints each problem with its key, then a summary; exits 1 on any problem.

    STORE may be left out: it is then the first store among the paths piped on standard
    input (`dataprep lmdb train.txt train_lmdb | dataprep verify`), or on a terminal the
    current folder's training store (exactly one), named on stderr.

    \b
    dataprep verify train_lmdb --list train.txt
    dataprep verify train_h5.txt
    """
    from ..piped import is_store, missing_source

    if store is None:
        store = missing_source("verify", is_store, "dataprep verify STORE")
    import json
    from pathlib import Path

    from ..errors import UsageError
    from ..stores.wds import prefix_of
    from ..verify import verify

    if not Path(store).exists() and not Path(store).is_symlink() and prefix_of(store) is None:
        raise UsageError(f"{store}: no store there")
    with progress(None, "verify", unit="rec") as update:
        report = verify(store, list_path, root=root, progress=update)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "store": store,
                    "ok": report.ok,
                    "checked": report.checked,
                    "problems": report.problems,
                    "notes": report.notes,
                },
                indent=2,
            )
        )
    else:
        for problem in report.problems:
            click.echo(problem)
        for note in report.notes:
            click.echo(f"note: {note}", err=True)
        status = "OK" if report.ok else f"{len(report.problems)} problem(s)"
        click.echo(f"{store}: {report.checked} records checked, {status}")
    if not report.ok:
        raise SystemExit(1)
