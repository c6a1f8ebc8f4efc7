"""Code step `publish`: assemble the final report from the last draft.

stdin:  {"step": "publish", "state": {"topic", "sources", "draft", "review"}}
stdout: {"title", "approved", "body", "references", "uncited_sources", "open_issues", "words"}

References are the sources the draft cites as [id], in the order of the source list; a cited
id that is not a source is reported in `open_issues`.
"""

import json
import re
import sys

state = json.load(sys.stdin)["state"]
draft = state["draft"] or ""
review = state["review"] or {"verdict": "revise", "issues": ["the draft was never reviewed"]}
sources = state["sources"] or []

cited = set(re.findall(r"\[([A-Za-z0-9_-]+)\]", draft))
known = {s["id"] for s in sources}
approved = review["verdict"] == "approve"
open_issues = [] if approved else list(review["issues"])
open_issues += [f"cites unknown source [{i}]" for i in sorted(cited - known)]

print(json.dumps({
    "title": f"Research report: {state['topic']}",
    "approved": approved,
    "body": draft,
    "references": [
        f"[{s['id']}] {s['title']}. {s['source']}, {s['year']}."
        for s in sources if s["id"] in cited
    ],
    "uncited_sources": [s["id"] for s in sources if s["id"] not in cited],
    "open_issues": open_issues,
    "words": len(draft.split()),
}))
