"""Print the column/type rows of every artifact kind, as docs/pipeline.md#artifacts lists them.

Run ``.venv/bin/python scripts/schema_docs.py`` after changing a schema in
negforge/artifacts.py and paste the rows into the docs' tables (meanings stay hand-written);
tests/pipeline/test_artifact_provenance.py fails while the docs and the schemas differ.
"""

from __future__ import annotations

from negforge.artifacts import ARROW_SCHEMAS, schema_table

#: The kind whose columns a kind's docs table leaves out ("the masked columns plus: ...").
DOC_BASES: dict[str, str | None] = {
    "dictionary": None,
    "masked": None,
    "negatives": "masked",
    "scored_negatives": "negatives",
    "scored_queries": None,
}


def doc_rows(kind: str) -> list[tuple[str, str]]:
    base = DOC_BASES[kind]
    skip = ARROW_SCHEMAS[base].names if base else []
    return schema_table(kind, skip)  # type: ignore[arg-type]


if __name__ == "__main__":
    for kind in DOC_BASES:
        print(f"**{kind}**\n\n| column | type |\n| --- | --- |")
        for name, type_name in doc_rows(kind):
            print(f"| `{name}` | {type_name} |")
        print()
