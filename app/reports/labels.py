"""Plain words for the codes the ledger and the outbox keep.

The ledger stores codes (`opt_out`, `inbound_text`, `opt_out.keywords_only:stop`);
a compliance officer reads "Opt-out", "Text from the subscriber", "opt-out word
STOP with nothing else". The console and the evidence bundle show the plain words
first and the code beside them in small type, so whoever needs the code (an
engineer, a subpoena's exhibit list) still finds it. Pure: codes in, words out.
"""

from __future__ import annotations

INTENTS = {
    "opt_in": "Opt-in",
    "confirm": "Confirmation",
    "opt_out": "Opt-out",
    "help": "Help request",
    "other": "Other text",
}
STATUSES = {
    "none": "never subscribed",
    "pending": "joined, awaiting YES",
    "active": "subscribed",
    "opted_out": "opted out",
}
EVENT_KINDS = {
    "inbound_text": "Text from the subscriber",
    "carrier_opt_out": "Carrier opt-out",
    "staff_decision": "Staff review decision",
    "import": "Imported consent",
    "erasure": "Erasure at the owner's request",
}
REPLY_KINDS = {
    "confirm_request": "Asked to confirm with YES",
    "welcome": "Welcome (subscription confirmed)",
    "already_subscribed": "Already subscribed",
    "opt_out_confirmation": "Opt-out confirmation",
    "resubscribed": "Resubscribed",
    "help": "Help answer",
    "how_to_join": "How to join",
    "program_message": "Program message",
}
MESSAGE_STATUSES = {
    "queued": "queued",
    "sending": "sending",
    "sent": "sent, awaiting the carrier's report",
    "delivered": "delivered",
    "undelivered": "not delivered",
    "failed": "failed",
    "suppressed": "not sent (held back)",
}
SEND_DECISIONS = {"send": "Sent", "deferred": "Deferred", "refused": "Refused"}
SEND_REASONS = {
    "quiet_hours": "quiet hours",
    "frequency_cap": "frequency cap reached",
    "no_consent": "no consent on record",
    "opted_out": "opted out",
    "suppressed": "erased number (suppression list)",
    "body_lint": "the text breaks the carrier rules",
    "review_hold": "a possible opt-out awaits review",
}
# The first part of a rule (`family.name:word`), as words; `{}` takes the word that matched.
RULES = {
    "opt_out.first_word": "opt-out word {} at the start",
    "opt_out.keywords_only": "opt-out word {} with nothing else",
    "opt_out.strong_word": "unambiguous opt-out word {}",
    "opt_out.phrase": "opt-out phrase “{}”",
    "help.first_word": "help word {} at the start",
    "opt_in.program_keyword": "program keyword {}",
    "opt_in.restart": "restart word {}",
    "opt_in.join": "join word {}",
    "confirm.only_word": "confirmation word {}",
    "twilio.error": "carrier block (Twilio error {})",
    "staff.review": "staff review",
}
STAFF_DECISIONS = {"opt_out": "treated as opt-out", "not_opt_out": "not an opt-out"}
LANGUAGES = {"en": "English", "es": "Spanish", "fr": "French", "ru": "Russian", "bg": "Bulgarian"}

TABLES = {
    "intent": INTENTS,
    "status": STATUSES,
    "kind": EVENT_KINDS,
    "reply": REPLY_KINDS,
    "delivery": MESSAGE_STATUSES,
    "decision": SEND_DECISIONS,
    "language": LANGUAGES,
}


def label(code: str | None, table: str) -> str:
    """The plain words for `code` in `table` (`intent`, `status`, `kind`, …); the code itself
    when it has none, so a new code shows rather than vanishes."""
    if code is None:
        return "—"
    return TABLES[table].get(str(code), str(code))


def rule_label(rule: str | None) -> str:
    """A classification rule in words: `opt_out.keywords_only:stop` → "opt-out word STOP with
    nothing else"; the grammar's `opt_out.<pattern>.<lang>:<words>` → "request to stop (Spanish):
    “no quiero mensajes”"."""
    if not rule:
        return "—"
    family, _, word = rule.partition(":")
    if family == "staff.review":
        return "staff review: " + STAFF_DECISIONS.get(word, word)
    if family in RULES:
        shown = word.upper() if family not in ("opt_out.phrase", "twilio.error") else word
        return RULES[family].format(shown)
    if family == "import":
        return "imported consent evidence"
    if family == "erasure":
        return "erasure"
    parts = family.split(".")
    if parts[0] == "opt_out" and len(parts) == 3:
        language = LANGUAGES.get(parts[2], parts[2])
        return f"request to stop ({language}): “{word}”"
    return rule


def reason_label(reason: str | None) -> str:
    """A send decision's reason (`quiet_hours:US-FL`) in words, keeping the detail."""
    if not reason:
        return "—"
    head, _, detail = reason.partition(":")
    words = SEND_REASONS.get(head, head)
    return f"{words} ({detail})" if detail else words


def status_change(before: str | None, after: str | None) -> str:
    """A status change as read aloud: "joined, awaiting YES → subscribed", or "no change"."""
    if before == after:
        return "no change" if after in (None, "none") else f"no change ({label(after, 'status')})"
    return f"{label(before or 'none', 'status')} → {label(after, 'status')}"


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """ "1 event", "2 events": the count and the right form of the noun."""
    return f"{count:,} {singular if count == 1 else (plural_form or singular + 's')}"
