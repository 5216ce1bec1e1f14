"""Regenerate `app/core/data/opt_out_forms.tsv` from simplemma (a dev dependency).

    .venv/bin/python tools/gen_opt_out_forms.py

Run it after adding a lemma to `app/core/opt_out_words.py` or upgrading simplemma;
`tests/test_opt_out_lexicon.py` fails until the committed table matches. The service
reads only the table (about 6,000 forms), never simplemma's dictionaries: see the
docstring of `app.core.opt_out_lexicon` for why.
"""

from __future__ import annotations

from pathlib import Path

from app.core.opt_out_lexicon import FORMS_TABLE, table_from_simplemma

TARGET = Path(__file__).resolve().parent.parent / "app" / "core" / FORMS_TABLE


def main() -> None:
    TARGET.write_text(table_from_simplemma(), encoding="utf-8")
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
