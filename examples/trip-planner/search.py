"""Tool `search_offers`: search offers.json.

stdin:  {"args": {"kind": ..., "city": ..., "max_price_usd"?: ...}, "context": {...}}
stdout: a list of offers, cheapest first.
"""

import json
import sys

args = json.load(sys.stdin)["args"]
with open("offers.json") as f:
    inventory = json.load(f)
limit = args.get("max_price_usd", float("inf"))
offers = [
    o for o in inventory[args["kind"]]
    if o["city"] == args["city"] and o["price_usd"] <= limit
]
print(json.dumps(sorted(offers, key=lambda o: o["price_usd"])))
