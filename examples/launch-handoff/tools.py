"""The example's tools: `launch_stats` (past launches) and `free_slots` (the team calendar).

stdin:  {"args": {...}, "context": {...}}; stdout: the result as JSON.
"""

import json
import sys

args = json.load(sys.stdin)["args"]
tool = sys.argv[1]
if tool == "launch_stats":
    print(json.dumps({
        "best_weekdays": ["Tue", "Wed", "Thu"],
        "best_time_pst": "00:01",
        "median_upvotes": {"Tue-Thu 00:01": 412, "Mon 00:01": 231, "Fri-Sun": 118},
    }))
elif tool == "free_slots":
    calendar = [
        {"day": "2026-11-24", "weekday": "Tue", "time_pst": "00:01", "free": False},
        {"day": "2026-11-25", "weekday": "Wed", "time_pst": "00:01", "free": True},
        {"day": "2026-11-26", "weekday": "Thu", "time_pst": "00:01", "free": True},
        {"day": "2026-12-01", "weekday": "Tue", "time_pst": "00:01", "free": True},
    ]
    slots = [
        c["day"] + " " + c["time_pst"] + " PST"
        for c in calendar
        if c["free"] and c["weekday"] in args["weekdays"] and c["time_pst"] == args["time_pst"]
    ]
    print(json.dumps(slots))
else:
    sys.exit("unknown tool " + tool)
