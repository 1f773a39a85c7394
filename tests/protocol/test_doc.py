"""docs/protocol.md against the messages: every type, field, default and error code.

The Node.js client (tests/node) proves the page by use; these checks are the cheap
half that needs no Node: a message, field or default added to ``_messages.py`` and
missing from the page (or the other way round) fails here.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import msgspec
import pytest

from lattice_workers.errors import Code
from lattice_workers.protocol import AnyReply, AnyRequest, RunInfo, WorkerInfo

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
HEADER = {"v", "rid"}


def table(heading: str) -> dict[str, str]:
    """The first table under ``heading``: first cell (a `name`) -> the rest of the row."""
    section = DOC.split(f"\n{heading}\n", 1)[1]
    rows: dict[str, str] = {}
    started = False
    for line in section.splitlines():
        if not line.startswith("|"):
            if started:
                break
            continue
        started = True
        first, _, rest = line.strip("|").partition("|")
        name = re.fullmatch(r"\s*`(\w+)`\s*", first)
        if name and name.group(1) != "type":  # not the header row
            rows[name.group(1)] = rest
    return rows


def fields_named(cell: str) -> set[str]:
    """The fields a table cell names: each written `` `name`: type ``."""
    return set(re.findall(r"`(\w+)`:", cell))


def paragraph(start: str) -> str:
    return DOC.split(start, 1)[1].split("\n\n", 1)[0]


def members(union: object) -> dict[str, type[msgspec.Struct]]:
    out = {}
    for cls in typing.get_args(union):
        out[msgspec.inspect.type_info(cls).tag] = cls  # type: ignore[attr-defined]
    return out


def wire_fields(cls: type[msgspec.Struct]) -> set[str]:
    return {f.name for f in msgspec.structs.fields(cls)} - HEADER


def test_the_page_lists_every_request_with_its_fields() -> None:
    documented = table("## Requests")
    requests = members(AnyRequest)
    assert set(documented) == set(requests)
    for tag, cls in requests.items():
        assert fields_named(documented[tag]) == wire_fields(cls), tag


def test_the_page_lists_every_reply_with_its_fields() -> None:
    documented = table("## Replies")
    replies = members(AnyReply)
    assert set(documented) == set(replies)
    for tag, cls in replies.items():
        assert fields_named(documented[tag]) == wire_fields(cls), tag


@pytest.mark.parametrize("record", [RunInfo, WorkerInfo], ids=lambda r: r.__name__)
def test_the_page_lists_every_field_of_the_records_and_their_defaults(
    record: type[msgspec.Struct],
) -> None:
    text = paragraph(f"*{record.__name__}*, a map.")
    named = set(re.findall(r"`(\w+)`\s+(?:str|int|float|bool|map|list)\b", text))
    assert named == {f.name for f in msgspec.structs.fields(record)}
    for field in msgspec.structs.fields(record):
        default = (
            field.default_factory() if field.default_factory is not msgspec.NODEFAULT
            else field.default
        )
        if default is msgspec.NODEFAULT or default is None:
            continue  # always present, or absent when unset: the page says which
        written = {"True": "true", "False": "false", "0.0": "0"}.get(repr(default), repr(default))
        pattern = rf"`{field.name}`\s+[\w ]+\s+=\s+{re.escape(written)}(?![\w.])"
        assert re.search(pattern, text), f"{field.name} = {written}"


def test_the_error_table_holds_codes_of_ours() -> None:
    documented = set(table("## Errors"))
    assert documented <= set(Code.__members__)
    # Every code the protocol names in its own section of errors.py is there.
    protocol_codes = {
        "INVALID_REQUEST", "UNSUPPORTED_VERSION", "NOT_FOUND", "INVALID_WORKER",
        "INVALID_ACTOR", "ENGINE_NOT_FOUND", "ALREADY_RUNNING", "CAPACITY", "SHUTTING_DOWN",
        "INTERNAL", "INVALID_ID", "INVALID_ARGUMENT",
    }
    assert protocol_codes <= documented
