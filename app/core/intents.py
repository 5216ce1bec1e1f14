"""What a text means: the intents the keyword reader gives and the ledger and API keep."""

from enum import StrEnum


class Intent(StrEnum):
    """What a text means; the values are those of the ledger and the JSON API."""

    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"  # JOIN, a program keyword, START
    CONFIRM = "confirm"  # YES
    HELP = "help"
    OTHER = "other"


OPT_OUT, OPT_IN, CONFIRM, HELP, OTHER = INTENTS = tuple(Intent)
