"""The keyword classifier: precision and recall per language, and the time to read a 60 KB text.

`python -m bench.classifier [--quick]` (or `make bench ARGS=--only=classifier`).

- **Accuracy**, per language, on the team's corpus (tests/data/opt_outs_<language>.toml):
  recall = requests read as opt-outs / requests; precision = true opt-outs / all
  opt-outs, where a false one is a look-alike (and, for English, a line of ordinary
  conversation from the ChatterBot corpus, read from the installed package) read as
  an opt-out; review = the share flagged `possible_opt_out`.
- **Speed**: `classify()` on 60 KB bodies (the webhook's limit is 64 KB): everyday
  text, text dense with the grammar's words (every sentence half a request), and
  words never seen before (the lexicon's cache is no help). The target is < 100 ms.
- **Start-up**: building the lexicon from its shipped table of forms, once per process.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from app.core import opt_out_lexicon
from app.core.keywords import LANGUAGES, OPT_OUT, classify
from bench.common import PROJECT, table, write_result

CORPUS = PROJECT / "tests" / "data"
BODY_BYTES = 60_000
TARGET_MS = 100


def conversation() -> list[str]:
    """English lines of the ChatterBot corpus, when the package (a dev extra) is installed."""
    try:
        import yaml
        from chatterbot_corpus.corpus import DATA_DIRECTORY
    except ImportError:
        return []
    lines: list[str] = []
    for path in sorted(Path(DATA_DIRECTORY, "english").glob("*.yml")):
        for dialogue in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations", []):
            lines.extend(line for line in dialogue if isinstance(line, str))
    return list(dict.fromkeys(lines))


def accuracy() -> list[dict]:
    rows = []
    ordinary = conversation()
    for language in LANGUAGES:
        with open(CORPUS / f"opt_outs_{language}.toml", "rb") as file:
            corpus = tomllib.load(file)
        requests, look_alikes = corpus["requests"], corpus["look_alikes"]
        negatives = look_alikes + (ordinary if language == "en" else [])
        true_positives = sum(classify(text).intent == OPT_OUT for text in requests)
        false_positives = sum(classify(text).intent == OPT_OUT for text in negatives)
        flagged_look_alikes = sum(classify(text).possible_opt_out for text in look_alikes)
        flagged_ordinary = sum(classify(text).possible_opt_out for text in ordinary)
        opted_out = true_positives + false_positives
        rows.append(
            {
                "language": language,
                "requests": len(requests),
                "look_alikes": len(look_alikes),
                "ordinary": len(ordinary) if language == "en" else 0,
                "recall": true_positives / len(requests),
                "precision": true_positives / opted_out if opted_out else 1.0,
                "look_alikes_opted_out": false_positives,
                "look_alikes_reviewed": flagged_look_alikes / len(look_alikes),
                "ordinary_reviewed": (
                    flagged_ordinary / len(ordinary) if language == "en" and ordinary else None
                ),
            }
        )
    return rows


def _cut(text: str) -> str:
    return text.encode()[:BODY_BYTES].decode(errors="ignore")


def bodies(rng: random.Random) -> dict[str, Callable[[], str]]:
    """Each kind of 60 KB body, as a function giving a fresh one."""
    everyday = " ".join(
        [
            "Hola, gracias por la información del pedido, nos vemos mañana en la tienda.",
            "Thanks for the reminder, see you at the store on Saturday around noon.",
            "Merci pour le message, je passerai au magasin samedi vers midi.",
            "Спасибо за сообщение, зайду в магазин в субботу около полудня.",
            "Благодаря за съобщението, ще мина през магазина в събота по обяд.",
        ]
    )
    dense = " ".join(
        [
            "no me enviaron el código de la lista",
            "vous ne m'avez pas envoyé le numéro",
            "вы не писали мне про номер",
            "той не ми пише от списъка",
            "I didn't get the messages",
        ]
    )
    letters = "abcdefghijklmnopqrstuvwxyzабвгдежзиклмнопрстуфхцчшщъыьэюя"

    def unseen() -> str:
        words = (
            "".join(rng.choice(letters) for _ in range(rng.randint(3, 12))) for _ in range(12_000)
        )
        return _cut(" ".join(words))

    return {
        "everyday text": lambda: _cut((everyday + " ") * 200),
        "half-requests everywhere": lambda: _cut((dense + " ") * 600),
        "unseen words (cold cache)": unseen,
    }


def speed(runs: int) -> list[dict]:
    rng = random.Random(11)
    rows = []
    for name, make in bodies(rng).items():
        timings = []
        for _ in range(runs):
            body = make()
            started = time.perf_counter()
            classify(body)
            timings.append((time.perf_counter() - started) * 1000)
        rows.append(
            {
                "body": name,
                "bytes": len(body.encode()),
                "median_ms": statistics.median(timings),
                "max_ms": max(timings),
            }
        )
    return rows


def _rss_mb() -> float:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 1e6
    except OSError:
        return float("nan")


def startup() -> dict:
    gc.collect()
    before = _rss_mb()
    started = time.perf_counter()
    opt_out_lexicon.Lexicon()
    seconds = time.perf_counter() - started
    gc.collect()
    return {"build_s": seconds, "rss_mb_kept_after_build": _rss_mb() - before}


def run(quick: bool = False) -> dict:
    opt_out_lexicon.warm()
    results = {"startup": startup(), "accuracy": accuracy(), "speed": speed(5 if quick else 30)}
    accuracy_table = table(
        "Classifier: opt-outs per language (tests/data corpus; en also ChatterBot conversation)",
        [
            (
                r["language"],
                r["requests"],
                r["look_alikes"] + r["ordinary"],
                f"{r['recall']:.1%}",
                f"{r['precision']:.1%}",
                r["look_alikes_opted_out"],
                f"{r['look_alikes_reviewed']:.0%}",
                "—" if r["ordinary_reviewed"] is None else f"{r['ordinary_reviewed']:.1%}",
            )
            for r in results["accuracy"]
        ],
        (
            "language",
            "requests",
            "not requests",
            "recall",
            "precision",
            "false opt-outs",
            "look-alikes reviewed",
            "conversation reviewed",
        ),
    )
    speed_table = table(
        f"Classifier: one 60 KB text (target < {TARGET_MS} ms); lexicon built in "
        f"{results['startup']['build_s']:.1f} s",
        [
            (r["body"], r["bytes"], f"{r['median_ms']:.1f}", f"{r['max_ms']:.1f}")
            for r in results["speed"]
        ],
        ("body", "bytes", "median ms", "max ms"),
    )
    results["table"] = accuracy_table + "\n" + speed_table
    write_result("classifier", results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer timing runs")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
