"""Tool `book`: book one offer and return a confirmation.

stdin:  {"args": {"offer_id": ..., "traveller": ...},
         "context": {"run_id": ..., "step": ..., "idempotency_key": ...}}
stdout: {"offer_id", "confirmation", "price_usd", "status"}

Like a real booking API, it takes the idempotency key so that a repeated call books once: when
the environment variable BOOKING_LEDGER names a file, each booking is appended to it as one JSON
line, unless a booking with the same key is already there (the crash tests count these lines).
The confirmation code is derived from the offer and the traveller, so it is the same on every
run. An unknown offer exits non-zero: the model sees the error and can correct itself.
"""

import fcntl
import hashlib
import json
import os
import sys

request = json.load(sys.stdin)
args = request["args"]
with open("offers.json") as f:
    offers = {o["id"]: o for kind in json.load(f).values() for o in kind}
offer = offers.get(args["offer_id"])
if offer is None:
    print(f"no such offer: {args['offer_id']}", file=sys.stderr)
    sys.exit(1)
digest = hashlib.sha1(f"{offer['id']}/{args['traveller']}".encode()).hexdigest()
ledger = os.environ.get("BOOKING_LEDGER")
if ledger:
    key = request.get("context", {}).get("idempotency_key", "")
    with open(ledger, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        seen = {json.loads(line)["key"] for line in f if line.strip()}
        if key not in seen:
            f.write(json.dumps({"key": key, "offer_id": offer["id"]}) + "\n")
print(json.dumps({
    "offer_id": offer["id"],
    "confirmation": "BK-" + digest[:6].upper(),
    "price_usd": offer["price_usd"],
    "status": "confirmed",
}))
