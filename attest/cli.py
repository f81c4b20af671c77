"""The ``attest`` command (DESIGN §7).

The core defines the command group and its own commands (``keygen``, ``hash``, ``sign``,
``export``). The sibling packages contribute theirs (``serve``, ``token``, ``verify``, ``compare``,
``demo``)
through the ``attest.commands`` entry-point group, loaded only when named: the core never imports
``attest.server``, ``attest.verifier`` or ``attest.callbacks``, and a light install that lacks an
extra says which one to add instead of failing with a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from attest import __version__
from attest.cli_export import export_command
from attest.cli_hash import hash_command
from attest.cli_sign import sign_command
from attest.errors import AttestError

__all__ = ["main"]

_EXTRA_FOR = {
    "serve": "server",
    "token": "server",
    "verify": "verifier",
    "compare": "forensics",
    "demo": "all",
}


class _Group(click.Group):
    """A group that also offers the commands other attest packages register."""

    def _plugins(self) -> dict[str, object]:
        from importlib.metadata import entry_points  # lazy: start-up time of `attest hash`

        return {ep.name: ep for ep in entry_points(group="attest.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = self._plugins().get(cmd_name)
        if ep is None:
            return None
        try:
            loaded = ep.load()  # type: ignore[attr-defined]
        except ImportError as exc:
            return _unavailable(cmd_name, exc)
        if not isinstance(loaded, click.Command):
            raise click.ClickException(f"entry point attest.commands:{cmd_name} is not a command")
        return loaded


def _unavailable(name: str, exc: ImportError) -> click.Command:
    """A stand-in for a command whose package is not installed: it names the extra to add."""
    extra = _EXTRA_FOR.get(name, "all")
    message = (
        f"`attest {name}` needs the '{extra}' extra ({exc.name or exc} is missing): "
        f"pip install 'attest-lineage[{extra}]'"
    )

    def fail() -> None:
        raise click.ClickException(message)

    return click.Command(name, callback=fail, help=f"(unavailable: needs the '{extra}' extra)")


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="attest")
def cli() -> None:
    """Signed, checkable records of how a model was trained."""


@cli.command()
@click.option(
    "--kind",
    type=click.Choice(["trainer", "server"]),
    default="trainer",
    show_default=True,
    help="trainer: ECDSA P-256 for signing records; server: Ed25519 for signing tree heads.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder for the key files.",
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
def keygen(kind: str, out: Path, force: bool) -> None:
    """Create a signing key: OUT/<kind>.key (private, mode 0600) and OUT/<kind>.pub."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from attest.keys import TrainerKey, save_server_key

    private, public = out / f"{kind}.key", out / f"{kind}.pub"
    if private.exists() and not force:
        raise click.ClickException(f"{private} exists; pass --force to replace it")
    if kind == "trainer":
        key = TrainerKey.generate()
        key.save(private)
        public.write_text(key.public.to_pem())
        click.echo(f"trainer key {key.key_id[:16]}… written to {private} and {public}")
    else:
        from attest.log import LogSigner

        skey = ed25519.Ed25519PrivateKey.generate()
        vkey = LogSigner("localhost/attest", skey).verifier.to_vkey()
        save_server_key(skey, private)
        public.write_text(vkey + "\n")
        click.echo(f"server key written to {private}; verifier key (for policies): {vkey}")


# The core's own commands; both modules import their heavy dependencies only when run.
cli.add_command(hash_command, "hash")
cli.add_command(sign_command, "sign")
cli.add_command(export_command, "export")


def main() -> None:
    """Console entry point: run the CLI, turning attest errors into one line on stderr."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except AttestError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
