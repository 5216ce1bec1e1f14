"""Which programs an opt-out covers: the FCC's revoke-all rule and the date it takes effect. Pure.

- Before `REVOKE_ALL_FROM` (default 31 January 2027): an opt-out covers the programs
  on the number the subscriber texted, as it always has (`NUMBER`).
- From that date: every program of the same brand, on any of our numbers
  (`REVOKE_ALL`; 47 C.F.R. § 64.1200(a)(10), deferred by FCC Order DA 26-12). The
  one confirmation the rule allows (§ 64.1200(a)(12)) may ask which categories the
  person wants to keep; until they answer (by texting that program's keyword, then
  YES), every one of them stays revoked.

The date is compared in UTC: the rule is in force for the whole of its first day
wherever the subscriber is, so no opt-out near midnight escapes it.

Every path that records an opt-out calls `opt_out_scope` and keeps its `note` on
the ledger event, so the evidence says which rule decided the programs covered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from app.core.programs import Catalog
from app.core.sending_rules import REVOKE_ALL

NUMBER = "number"
REVOKE_ALL_SCOPE = "revoke_all"


@dataclass(frozen=True)
class OptOutScope:
    """The programs an opt-out covers, the scope rule that chose them, and the ledger note."""

    program_ids: tuple[str, ...]
    rule: str
    note: str


def opt_out_scope(
    catalog: Catalog,
    number_texted: str | None,
    at: datetime,
    also: Iterable[str | None] = (),
) -> OptOutScope:
    """The programs an opt-out received at `at` on `number_texted` covers.

    `also` adds programs the opt-out names in any case (the program of the message a
    carrier opt-out answered, the program of a flagged text). Order: the number's
    programs in file order, then `also`, then (revoke-all) the brand's other programs.
    """
    program_ids = catalog.programs_touched(number_texted or None)
    for program_id in also:
        program_ids = catalog.programs_touched(None, program_id, base=program_ids)
    if at.astimezone(UTC).date() < catalog.revoke_all_from:
        return OptOutScope(
            tuple(program_ids),
            NUMBER,
            f"opt-out scope: {NUMBER} (the programs on the number texted; revoke-all, "
            f"{REVOKE_ALL.citation.split(' (')[0]}, applies from "
            f"{catalog.revoke_all_from.isoformat()})",
        )
    brands = sorted({p.brand for pid in program_ids if (p := catalog.get(pid)) is not None})
    for program in catalog.of_brands(brands):
        if program.id not in program_ids:
            program_ids.append(program.id)
    return OptOutScope(
        tuple(program_ids),
        REVOKE_ALL_SCOPE,
        f"opt-out scope: {REVOKE_ALL_SCOPE} (every program of {', '.join(brands) or 'no brand'}; "
        f"{REVOKE_ALL.citation.split(' (')[0]}, in force from "
        f"{catalog.revoke_all_from.isoformat()})",
    )
