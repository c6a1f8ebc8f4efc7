"""Tool `search`: keyword search over the local corpus (corpus.json).

stdin:  {"args": {"query": "...", "limit"?: N}, "context": {...}}
stdout: the best-matching documents, best first:
        [{"id", "title", "source", "year", "snippet"}, ...]

A document scores one point per query word found in its text and three per word found in its
title; ties go to the newer document, then to the lower id. Documents that match no word are
left out. Deterministic, offline, read-only.
"""

import json
import re
import sys

STOP = {"a", "an", "and", "the", "of", "in", "on", "for", "to", "by", "with", "from", "latest"}


def words(text):
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP]


def main():
    args = json.load(sys.stdin)["args"]
    query = words(args["query"])
    limit = int(args.get("limit", 3))
    with open("corpus.json") as f:
        corpus = json.load(f)
    scored = []
    for doc in corpus:
        title, text = set(words(doc["title"])), set(words(doc["text"]))
        score = sum(3 * (w in title) + (w in text) for w in set(query))
        if score > 0:
            scored.append((-score, -doc["year"], doc["id"], doc))
    scored.sort(key=lambda t: t[:3])
    hits = [
        {
            "id": doc["id"],
            "title": doc["title"],
            "source": doc["source"],
            "year": doc["year"],
            "snippet": doc["text"].split(". ")[0].rstrip(".") + ".",
        }
        for *_, doc in scored[:limit]
    ]
    print(json.dumps(hits))


main()
