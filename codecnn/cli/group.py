"""The ``codecnn`` click group and how every command reports bad input (one line, exit code 2)."""

from __future__ import annotations

import sys

import click

from codecnn import __version__
from codecnn.errors import CodecnnError
from codecnn.files import output_error


class UserError(click.ClickException):
    """A one-line message and exit code 2, no traceback."""

    exit_code = 2


class CodecnnGroup(click.Group):
    """A click group whose commands turn :class:`CodecnnError`, click's own usage errors (a bad option value,
    a missing option) and the OS errors of an output (no space left, a read-only file system, ...:
    :func:`codecnn.files.output_error`) into :class:`UserError` (exit 2, one line), and Ctrl-C into exit
    130 with a word on ``--resume``; its subgroups are of the same class; ``python -m hm_bridge`` uses it
    too."""

    group_class = type  # subgroups (``train``) behave the same

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CodecnnError as e:
            raise UserError(str(e)) from None
        except click.UsageError as e:
            if isinstance(e, UserError):
                raise
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            raise UserError(f"{e.format_message()} ({where} --help lists the options)") from None
        except OSError as e:
            error = output_error(e)
            if error is None:
                raise
            raise UserError(str(error)) from None
        except KeyboardInterrupt:
            click.echo("codecnn: interrupted; finished work is kept: rerun with --resume to continue", err=True)
            sys.exit(130)


def command_inputs(*outputs: str) -> list[tuple[str, object]]:
    """The input paths the running command was given, as ``(option, value)`` pairs for
    :func:`codecnn.files.check_not_input`: every path option and argument but the ``outputs`` (parameter
    names), and the files of a sequence list (``--list``, found in ``--seq-dir``)."""
    ctx = click.get_current_context()
    pairs = [
        (max(p.opts, key=len) if isinstance(p, click.Option) else p.human_readable_name, ctx.params.get(p.name))
        for p in ctx.command.params
        if isinstance(p.type, click.Path) and p.name not in outputs
    ]
    if ctx.params.get("seq_list"):
        from codecnn.sequences import load_sequence_list

        listed = load_sequence_list(ctx.params["seq_list"], ctx.params.get("seq_dir"))
        pairs += [(f"--list {ctx.params['seq_list']}, sequence {s.name}, file", s.path) for s in listed]
    return pairs


def echo_lines(lines) -> None:
    for line in lines:
        click.echo(line)


@click.group(cls=CodecnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codecnn")
def cli():
    """codecnn: CNN restoration and intra-mode prediction inside an HEVC codec."""


def main() -> None:
    cli(prog_name="codecnn")
