"""Tool `book`: book one offer and return a confirmation.

stdin:  {"args": {"offer_id": ..., "traveller": ...},
         "context": {"run_id": ..., "step": ..., "idempotency_key": ...}}
stdout: {"offer_id", "confirmation", "price_usd", "status"}

A real booking API would take the idempotency key so that a retried call books once. Here the
confirmation code is derived from the offer and the traveller, so it is the same on every run.
An unknown offer exits non-zero: the model sees the error and can correct itself.
"""

import hashlib
import json
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
print(json.dumps({
    "offer_id": offer["id"],
    "confirmation": "BK-" + digest[:6].upper(),
    "price_usd": offer["price_usd"],
    "status": "confirmed",
}))
