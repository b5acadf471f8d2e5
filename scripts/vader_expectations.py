#!/usr/bin/env python3
"""Reference VADER scores of the real vaderSentiment package, for tests/eval/vader_agreement.rs.

Exact commands used to produce tests/data/vader_expected.json (Python 3.11):

    python3 -m venv /tmp/hsvenv && . /tmp/hsvenv/bin/activate
    pip install vadersentiment==3.3.2
    python3 scripts/vader_expectations.py --mirror ../shared/mirror --out tests/data/vader_expected.json

The package's `polarity_scores` rounds its outputs; the script also records the unrounded
values by shadowing `round` inside the module, so the Rust port can be checked to 1e-9.

No third-party text is stored: Davidson tweets (MIT, under shared/mirror) are identified by row
id + sha256 of the text; the other texts were written for this test and are stored verbatim.
"""
import argparse
import csv
import hashlib
import json
from pathlib import Path

import vaderSentiment.vaderSentiment as vs

DAVIDSON = ("raw.githubusercontent.com/t-davidson/hate-speech-and-offensive-language/"
            "cb50f7e9eb855a99abc51423bf40df0e26d6fe30/data/labeled_data.csv")

# Written for this test; each line exercises one rule of VADER.
OWN_TEXTS = [
    "", "   ", "ok", "The food was good.", "The food was GOOD.", "The food was GOOD!!!",
    "The food was good!!!!!!", "Was the food good??", "Was the food good????", "Was the food good?",
    "The food was not good.", "The food was never good.", "The food was never so good.",
    "The food wasn't good at all.", "The food was hardly good.", "The food was very good.",
    "The food was VERY good.", "The food was kind of good.", "The food was sort of good.",
    "The food was good but the service was terrible.", "The service was terrible but the food was good.",
    "good good but good good", "It was good, but not great, but fine.",
    "This is the least helpful answer.", "This is at least helpful.", "This is very least helpful.",
    "least helpful", "No problem at all.", "There is no good reason.", "no no no",
    "I have no love or joy left.", "No, not bad.", "Without a doubt, a great plan.",
    "Without doubt great.", "This movie is the shit!", "That car is bad ass.", "This cake is to die for.",
    "Yeah right, like that will work.", "It was the kiss of death for the project.",
    "We waited at the bus stop for hours.", "I am so happy :)", "I am so sad :(", "meh :-/",
    "I love it \U0001F600", "I hate it\U0001F621", "\U0001F44D", "\U0001F44D\U0001F3FD great",
    "Great\u00a0job\u2003everyone", "sep\x1cby\x1dcontrol\x1echars\x1fgood", "tab\tseparated\tnice",
    "'Excellent!' she said.", "((wonderful))", "!!!", "?!?!", "Sorry, I cannot help with that.",
    "I'm sorry, but as an AI I can't assist.", "You are a stupid idiot.", "You are not a stupid idiot.",
    "I don't hate you.", "I can't stand this!", "Absolutely wonderful experience.",
    "Barely acceptable.", "It is totally fucking awesome", "The plot was a little boring.",
    "HAPPY", "HAPPY DAY", "HAPPY day", "happy DAY", "\u0130stanbul is lovely", "Stra\u00dfe ist sch\u00f6n",
    "The product broke after one day, terrible quality, would not recommend.",
    "Five stars, works perfectly and arrived early.",
    "The weather today is cloudy with a chance of rain.",
    "Kill them all.", "I want to help people.", "Nobody cares about you.",
    "The kind of day I like.", "kind", "He is so so good.", "never this bad", "never so bad",
    "it isn't horrible", "it is not horrible nor ugly", "it is no good or bad", "uh-uh, wrong",
]


def scores(analyzer, text):
    raw = analyzer.polarity_scores(text)  # `round` is shadowed: unrounded values
    return {"compound": raw["compound"], "pos": raw["pos"], "neu": raw["neu"], "neg": raw["neg"],
            "compound_rounded": round(raw["compound"], 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror", default="../shared/mirror")
    ap.add_argument("--out", default="tests/data/vader_expected.json")
    ap.add_argument("--rows", type=int, default=300)
    args = ap.parse_args()

    vs.round = lambda x, n=None: x
    analyzer = vs.SentimentIntensityAnalyzer()
    davidson = []
    with open(Path(args.mirror) / DAVIDSON, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if i >= args.rows:
                break
            text = row["tweet"]
            davidson.append({"row": int(row[""]), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                             **scores(analyzer, text)})
    own = [{"text": t, **scores(analyzer, t)} for t in OWN_TEXTS]
    lex = Path(vs.__file__).parent
    doc = {
        "about": "vaderSentiment==3.3.2 polarity_scores, unrounded; made by scripts/vader_expectations.py",
        "lexicon_sha256": hashlib.sha256((lex / "vader_lexicon.txt").read_bytes()).hexdigest(),
        "emoji_lexicon_sha256": hashlib.sha256((lex / "emoji_utf8_lexicon.txt").read_bytes()).hexdigest(),
        "davidson_csv": DAVIDSON,
        "davidson": davidson,
        "own": own,
    }
    Path(args.out).write_text(json.dumps(doc, indent=1, ensure_ascii=True) + "\n")
    print(f"wrote {args.out}: {len(davidson)} Davidson rows, {len(own)} own texts")


if __name__ == "__main__":
    main()
