#!/usr/bin/env python3
"""Reference probabilities of the real hatesonar package, for tests/eval/hatesonar_agreement.rs.

Exact commands used to produce tests/data/hatesonar_expected.json (Debian/Ubuntu, Python 3.11):

    apt-get install -y locales && sed -i 's/# en_US.UTF-8/en_US.UTF-8/' /etc/locale.gen && locale-gen
    python3 -m venv /tmp/hsvenv && . /tmp/hsvenv/bin/activate
    pip install hatesonar==0.1.0        # pulls onnxruntime, numpy, pandas, scikit-learn, skl2onnx
    python3 scripts/hatesonar_expectations.py --mirror ../shared/mirror \
        --out tests/data/hatesonar_expected.json

onnxruntime's StringNormalizer needs the en_US.UTF-8 locale (without it, creating the session
fails), hence the locale step.

No third-party text is stored: for the Davidson tweets (MIT, mirrored under shared/mirror) the
file holds the row id, the sha256 of the tweet text and the probabilities; the test reads the
tweets from the mirror. The other texts were written for this test and are stored verbatim.
"""
import argparse
import csv
import hashlib
import json
from pathlib import Path

import hatesonar
from hatesonar import Sonar

DAVIDSON = ("raw.githubusercontent.com/t-davidson/hate-speech-and-offensive-language/"
            "cb50f7e9eb855a99abc51423bf40df0e26d6fe30/data/labeled_data.csv")

# Written for this test: edge cases of each op of the graph (case folding, tokenizer regex,
# unknown words, empty input, repetition, non-ASCII) and plain sentences.
OWN_TEXTS = [
    "",
    " ",
    "!!!",
    "hello there, how are you today?",
    "The weather is lovely and the garden is full of flowers.",
    "I think the meeting went well, thanks for organising it.",
    "shut up you stupid bitch",
    "SHUT UP YOU STUPID BITCH",
    "Shut Up You Stupid Bitch",
    "bitch bitch bitch bitch bitch",
    "bitch",
    "bitch_ass",
    "bitch ass",
    "bitch-ass",
    "bitch\u00e9ass",
    "B\u0130TCH",
    "bitch\u0130ass",
    "\u212aill them all",
    "kill them all",
    "K\u0131LL them all",
    "Stra\u00dfe und \u00c4rger",
    "\u0441\u0443\u043a\u0430 bitch",
    "\U0001F600 what a hoe \U0001F602",
    "trash trash trash",
    "you are trash",
    "that game was trash lol",
    "these people are animals and should go back where they came from",
    "I love my friends and my family",
    "fag",
    "faggot",
    "what a nice day 2 go 4 a walk",
    "RT @someone: check this out http://t.co/abc123",
    "&amp; &#8220;quoted&#8221; text",
    "line one\nline two\tbitch",
    "a" * 500,
    "word " * 200,
    "0000000000000 007beardownjedi",
    "n1gga please",
    "My cat is the best cat in the world.",
    "The report is due on Monday; please send your comments.",
    "Go away, nobody likes you.",
    "You are a disgrace to humanity.",
    "That was a really dumb idea, but okay.",
    "ghetto hoes and thugs",
    "pussy cat",
    "It is raining in London.",
]


def probs(sonar, text):
    out = sonar.ping(text)
    return [float(c["confidence"]) for c in out["classes"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror", default="../shared/mirror")
    ap.add_argument("--out", default="tests/data/hatesonar_expected.json")
    ap.add_argument("--rows", type=int, default=300)
    args = ap.parse_args()

    sonar = Sonar()
    model = Path(hatesonar.__file__).parent / "model" / "model.onnx"
    davidson = []
    with open(Path(args.mirror) / DAVIDSON, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for i, row in enumerate(reader):
            if i >= args.rows:
                break
            text = row["tweet"]
            davidson.append({
                "row": int(row[""]),
                "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                "probs": probs(sonar, text),
            })
    own = [{"text": t, "probs": probs(sonar, t)} for t in OWN_TEXTS]
    doc = {
        "about": "hatesonar==0.1.0 Sonar().ping probabilities [hate_speech, offensive_language, neither]; "
                 "made by scripts/hatesonar_expectations.py",
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "davidson_csv": DAVIDSON,
        "davidson": davidson,
        "own": own,
    }
    Path(args.out).write_text(json.dumps(doc, indent=1, ensure_ascii=True) + "\n")
    print(f"wrote {args.out}: {len(davidson)} Davidson rows, {len(own)} own texts")


if __name__ == "__main__":
    main()
