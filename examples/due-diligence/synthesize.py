"""Confidence-weighted synthesis of the specialists' findings (seed 001).

    score = sum(score_i * confidence_i * authority_i) / sum(confidence_i * authority_i)

Input on stdin: {"step": "synthesis", "state": {"target", "financial", "market", "legal"}}.
Output on stdout: the recommendation.
"""

import json
import sys

AUTHORITY = {"financial": 1.0, "legal": 1.0, "market": 0.8}

state = json.load(sys.stdin)["state"]
num = den = 0.0
flags = []
for area, authority in AUTHORITY.items():
    finding = state[area]
    weight = finding["confidence"] * authority
    num += finding["score"] * weight
    den += weight
    flags += [f"{area}: {flag}" for flag in finding["red_flags"]]

score = round(num / den, 1)
if score >= 70 and not flags:
    decision = "proceed"
elif score >= 55:
    decision = "proceed_with_conditions"
else:
    decision = "decline"
confidence = round(sum(state[a]["confidence"] for a in AUTHORITY) / len(AUTHORITY), 2)

print(json.dumps({
    "company": state["target"]["company"],
    "decision": decision,
    "weighted_score": score,
    "confidence": confidence,
    "conditions": flags,
}))
