"""Code steps of the lead pipeline.

baton runs this script for each code step with the step's input on stdin:
    {"step": "<step id>", "state": {<the keys the step reads>}}
and takes the JSON printed on stdout as the step's output. A non-zero exit fails the step
(the message on stderr ends up in the run report).
"""

import hashlib
import json
import sys

EU = {"DE", "FR", "NL", "ES", "IT", "IE", "AT", "BE", "PL", "SE", "DK", "FI", "PT"}
TERRITORIES = {"EU": "Anna Schmidt", "NA": "Marcus Lee", "APAC": "Priya Raman"}
APAC = {"JP", "SG", "AU", "IN", "KR", "NZ"}


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def capture(state):
    raw = state.get("raw_lead") or {}
    email = (raw.get("email") or "").strip().lower()
    if "@" not in email:
        fail(f"lead has no valid email address: {raw.get('email')!r}")
    country = (raw.get("country") or "").strip().upper()
    region = "EU" if country in EU else "APAC" if country in APAC else "NA"
    lead = {
        "name": " ".join(p.capitalize() for p in raw.get("name", "").split()),
        "email": email,
        "domain": email.split("@", 1)[1],
        "company": raw.get("company", "").strip(),
        "title": raw.get("title", "").strip(),
        "country": country,
        "region": region,
        "source": raw.get("source", "web_form"),
        "message": raw.get("message", "").strip(),
    }
    return {"lead": lead, "activity": f"captured {lead['email']} from {lead['source']}"}


def assign(state):
    lead, score = state["lead"], state["score"]
    owner = TERRITORIES[lead["region"]]
    qualification = {
        "tier": "hot",
        "owner": owner,
        "next_action": "call within 1 business hour",
    }
    return {
        "qualification": qualification,
        "activity": f"hot lead (score {score}) assigned to {owner}",
    }


def nurture(state):
    score = state["score"]
    tier = "warm" if score >= 60 else "cold" if score >= 40 else "unqualified"
    sequence = {
        "warm": "nurture-30d",
        "cold": "nurture-90d",
        "unqualified": "marketing-newsletter",
    }[tier]
    return {
        "qualification": {"tier": tier, "sequence": sequence, "next_action": "email sequence"},
        "activity": f"{tier} lead (score {score}) enrolled in {sequence}",
    }


def manual_review(state):
    who = (state.get("lead") or state.get("raw_lead") or {}).get("company", "unknown")
    return {
        "qualification": {
            "tier": "manual_review",
            "queue": "data-quality",
            "next_action": "a human checks the lead within 24 hours",
        },
        "activity": f"{who}: sent to manual review",
    }


def crm_update(state):
    lead = state.get("lead") or {}
    raw = state.get("raw_lead") or {}
    q = state.get("qualification") or {}
    key = lead.get("email") or raw.get("email") or raw.get("company") or ""
    record = {
        "id": "LEAD-" + hashlib.sha1(key.encode()).hexdigest()[:8].upper(),
        "company": lead.get("company") or raw.get("company"),
        "status": {"hot": "assigned", "manual_review": "needs_review"}.get(
            q.get("tier"), "nurturing"
        ),
        "owner": q.get("owner") or q.get("queue") or "marketing",
        "score": state.get("score"),
    }
    return {"crm_record": record, "activity": f"CRM record {record['id']} {record['status']}"}


STEPS = {
    "capture": capture,
    "assign": assign,
    "nurture": nurture,
    "manual_review": manual_review,
    "crm_update": crm_update,
}

if __name__ == "__main__":
    request = json.load(sys.stdin)
    step = STEPS.get(request["step"])
    if step is None:
        fail(f"pipeline.py has no step {request['step']!r}")
    print(json.dumps(step(request["state"])))
