"""MkDocs hook: pages generated from the code at build time, never written by hand.

- ``docs/cli.md`` holds the marker ``<!-- cli-reference -->``; it is replaced by one section per
  ``distill`` subcommand (usage and every option), rendered from the real argument parsers
  (``teacher_store.cli.build_parser``), so the reference cannot drift from the CLI.
- ``openapi.json``: the service's OpenAPI schema (no token configured), written into the site
  so that the service page can link to the schema of the documented version.

``mkdocs.yml`` names this file under ``hooks:``; ``tests/test_docs.py`` tests the rendering.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any

MARKER = "<!-- cli-reference -->"


def _cell(text: str) -> str:
    """Text for a Markdown table cell: pipes, angle brackets and stars kept literal."""
    for old, new in (("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("*", "\\*")):
        text = text.replace(old, new)
    return " ".join(text.split())


def _help(action: argparse.Action, prog: str) -> str:
    """The action's help with argparse's ``%(default)s``-style fields filled in."""
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    if action.choices is not None:
        params["choices"] = ", ".join(map(str, action.choices))
    return action.help % params


def _name(action: argparse.Action) -> str:
    """``--opt METAVAR`` / ``-o, --opt {a,b}`` / ``POSITIONAL``, as the usage line spells it."""
    formatter = argparse.HelpFormatter(prog="distill")
    if not action.option_strings:
        return formatter._format_args(action, action.dest)
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return names
    default = action.dest.upper()
    return f"{names} {formatter._format_args(action, default)}"


def _default(action: argparse.Action) -> str:
    d = action.default
    if action.nargs == 0 or d is None or d is argparse.SUPPRESS or action.required:
        return ""
    if isinstance(d, (list, tuple)):
        return "`" + " ".join(map(str, d)) + "`"
    return f"`{d}`"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """Each subcommand's name -> (one-line help, its parser), in registration order."""
    out: dict[str, tuple[str, argparse.ArgumentParser]] = {}
    for action in parser._actions:  # argparse offers no public walk
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out[name] = (helps.get(name, ""), sub)
    return out


def render_command(name: str, summary: str, parser: argparse.ArgumentParser, level: int) -> str:
    """One subcommand's section: heading, summary, usage block and an options table per group."""
    lines = [f"{'#' * level} `{parser.prog}`", ""]
    if summary:
        lines += [summary[:1].upper() + summary[1:] + ".", ""]
    if parser.description:
        lines += [parser.description, ""]
    usage = parser.format_usage().removeprefix("usage: ").strip()
    lines += ["```text", usage, "```", ""]
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
            and a.help != argparse.SUPPRESS
        ]
        if not actions:
            continue
        lines += [f"**{group.title}**", "", "| argument | default | what |", "| --- | --- | --- |"]
        for a in actions:
            what = _cell(_help(a, parser.prog))
            if a.required and a.option_strings:
                what = f"(required) {what}"
            lines.append(f"| `{_cell(_name(a))}` | {_default(a)} | {what} |")
        lines.append("")
    if parser.epilog:
        lines += [parser.epilog, ""]
    for sub_name, (sub_summary, sub) in _subcommands(parser).items():
        lines.append(render_command(sub_name, sub_summary, sub, level + 1))
    return "\n".join(lines)


def render_cli_reference(parser: argparse.ArgumentParser) -> str:
    """The Markdown reference of ``parser``: a summary table, then one section per subcommand."""
    subs = _subcommands(parser)
    lines = ["| command | what it does |", "| --- | --- |"]
    for summary, sub in subs.values():
        anchor = sub.prog.replace(" ", "-")
        lines.append(f"| [`{sub.prog}`](#{anchor}) | {_cell(summary)} |")
    lines.append("")
    for name, (summary, sub) in subs.items():
        lines.append(render_command(name, summary, sub, level=2))
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: put the generated reference where a page holds the marker."""
    if MARKER not in markdown:
        return markdown
    from teacher_store.cli import build_parser

    return markdown.replace(MARKER, render_cli_reference(build_parser()))


def openapi_schema() -> dict[str, Any]:
    """The service's OpenAPI schema as ``GET /openapi.json`` answers it (no token configured)."""
    from api.main import create_app
    from api.settings import Settings

    with tempfile.TemporaryDirectory() as root:
        return create_app(Settings(root=root)).openapi()


def on_files(files: Any, config: Any) -> Any:
    """MkDocs event: add ``openapi.json`` to the site (links to it are then checked too)."""
    from mkdocs.structure.files import File

    content = json.dumps(openapi_schema(), indent=1, sort_keys=True) + "\n"
    files.append(File.generated(config, "openapi.json", content=content))
    return files
