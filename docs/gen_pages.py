"""Pages generated from the code at build time (mkdocs-gen-files), so that they cannot drift from it.

- reference/cli.md: every command and option of ``lumbarseg``, walked from the argparse parsers
  (``lumbarseg.cli.build_parser``): a command added there appears here by itself;
- reference/config.md: the experiment config's keys, types and defaults, from the config dataclasses, each
  described by the comment on its field's line;
- reference/onnx-contract.md: the model metadata's fields, from ``ModelMetadata`` the same way;
- models/<name>.md: each shipped model's card, ``models/<file>.md`` (one source, also packed into the wheel),
  with the pictures it shows, and every other picture in models/.

Hand-written prose of reference pages stays in docs/; the tables are appended to it.
"""
from __future__ import annotations

import argparse
import dataclasses
import html
import inspect
import re
import typing
from pathlib import Path

import mkdocs_gen_files

from lumbarseg.cli import build_parser
from lumbarseg.config import ExperimentConfig, _config_fields
from lumbarseg.model.metadata import ModelMetadata
from lumbarseg.model.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")


def cell(text: object) -> str:
    """Text safe inside a Markdown table cell (no pipes, no HTML, no line breaks)."""
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def code(text: object) -> str:
    """Code inside a Markdown table cell: HTML, since a backslash-escaped pipe would show inside backticks."""
    return "<code>" + html.escape(str(text)).replace("|", "&#124;") + "</code>"


# --- the command line -------------------------------------------------------------------------------------------

def subcommands(parser: argparse.ArgumentParser) -> list:
    """(name, help, parser) of the parser's subcommands, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def option_rows(parser: argparse.ArgumentParser) -> list:
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, (argparse._SubParsersAction, argparse._HelpAction)):
            continue  # -h/--help: on every command, said once on top of the page
        name = ", ".join(action.option_strings) or action.metavar or action.dest
        takes_value = bool(action.option_strings) and action.nargs != 0  # not a positional, not a switch
        value = formatter._format_args(action, action.dest.upper()) if takes_value else ""
        default = action.default
        hidden = default is None or default is False or default == argparse.SUPPRESS or action.nargs == 0
        shown = "" if hidden else code(default)
        text = formatter._expand_help(action) if action.help else ""
        if action.required:
            text = f"**required.** {text}"
        rows.append(f"| {code(name)} | {code(value) if value else ''} | {shown} | {cell(text)} |")
    return rows


def command_section(path: list, parser: argparse.ArgumentParser, help_text: str, out: typing.TextIO) -> None:
    level = "#" * min(len(path) + 1, 4)
    out.write(f"\n{level} `{' '.join(path)}`\n\n")
    if parser.description or help_text:
        out.write(f"{parser.description or help_text}\n\n")
    out.write(f"```text\n{parser.format_usage().strip()}\n```\n\n")
    rows = option_rows(parser)  # -h/--help aside
    if rows:
        out.write("| option | value | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    children = subcommands(parser)
    if children:
        out.write("\n" + "\n".join(f"- `{' '.join([*path, name])}`: {cell(h)}" for name, h, _ in children) + "\n")
    for name, child_help, child in children:
        command_section([*path, name], child, child_help, out)


with mkdocs_gen_files.open("reference/cli.md", "a") as out:
    top = build_parser()
    for name, help_text, parser in subcommands(top):
        command_section(["lumbarseg", name], parser, help_text, out)


# --- the experiment config and the model metadata -----------------------------------------------------------------

def field_comments(cls: type) -> dict:
    return {m.group(1): m.group(2).strip() for m in map(FIELD_COMMENT.match, inspect.getsource(cls).splitlines()) if m}


def type_name(hint: object) -> str:
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    return text or str(hint).replace("typing.", "").replace("NoneType", "None")


def default_of(field: dataclasses.Field) -> object:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return None


def key_rows(cls: type, prefix: str = "") -> list:
    hints, comments, rows = typing.get_type_hints(cls), field_comments(cls), []
    for field in _config_fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            own_doc = hint.__doc__ if not (hint.__doc__ or "").startswith(hint.__name__ + "(") else ""  # not the repr
            first_line = inspect.cleandoc(own_doc or "").split("\n\n")[0].replace("\n", " ")
            rows.append(f"| `{prefix}{field.name}` | section | {cell(comments.get(field.name) or first_line)} |")
            rows += key_rows(hint, f"{prefix}{field.name}.")
            continue
        default = default_of(field)
        rows.append(f"| `{prefix}{field.name}` | {code(type_name(hint))} = {code(default)} | "
                    f"{cell(comments.get(field.name, ''))} |")
    return rows


with mkdocs_gen_files.open("reference/config.md", "a") as out:
    out.write("\n## Every key\n\nFrom the config's dataclasses (`lumbarseg.config`), generated when the manual is "
              "built.\n\n| key | type = default | meaning |\n|---|---|---|\n")
    out.write("\n".join(key_rows(ExperimentConfig)) + "\n")

with mkdocs_gen_files.open("reference/onnx-contract.md", "a") as out:
    hints, comments = typing.get_type_hints(ModelMetadata), field_comments(ModelMetadata)
    out.write("\n## Metadata fields\n\nThe JSON object under `metadata_props[\"lumbarseg\"]`, from "
              "`lumbarseg.model.metadata.ModelMetadata` (generated when the manual is built).\n\n"
              "| field | type = default | meaning |\n|---|---|---|\n")
    for field in dataclasses.fields(ModelMetadata):
        default = default_of(field)
        shown = "(required)" if default is None and field.default is dataclasses.MISSING else f"= {code(default)}"
        out.write(f"| `{field.name}` | {code(type_name(hints[field.name]))} {shown} | "
                  f"{cell(comments.get(field.name, ''))} |\n")


# --- the model cards ---------------------------------------------------------------------------------------------

for picture in sorted((ROOT / "models").glob("*.png")):
    with mkdocs_gen_files.open(f"models/{picture.name}", "wb") as out:
        out.write(picture.read_bytes())
for model in MODELS.values():
    with mkdocs_gen_files.open(f"models/{model.name}.md", "w") as out:
        out.write((ROOT / "models" / model.card).read_text(encoding="utf-8"))
