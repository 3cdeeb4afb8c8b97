#!/usr/bin/env python3
"""Changes COUNT random TARE patients of a FHIR server between two benchmark runs: each gets a
new PIVKA-II value (standard library only).

    python3 benches/change_patients.py BASE_URL FOLDER COUNT SEED
FOLDER is the generated cohort the server was seeded with (for the patient ids).
"""
import json
import pathlib
import random
import sys
import urllib.request


def main():
    base, folder, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ids = []
    for path in sorted(pathlib.Path(folder).glob("Patient*.ndjson")):
        ids.extend(json.loads(line)["id"] for line in open(path))
    rng = random.Random(seed)
    chosen = rng.sample(sorted(ids), count)
    entries = []
    for n, patient in enumerate(chosen):
        observation = {
            "resourceType": "Observation", "id": f"bench-change-{seed}-{n}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "34444-0"}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": "2026-10-30T09:00:00Z",
            "valueQuantity": {"value": rng.choice([12.0, 4800.0, 61000.0]), "unit": "mAU/mL",
                              "system": "http://unitsofmeasure.org", "code": "[arb'U]/L"},
        }
        url = f"Observation/{observation['id']}"
        entries.append({"fullUrl": f"{base.rstrip('/')}/{url}", "resource": observation,
                        "request": {"method": "PUT", "url": url}})
    body = json.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}).encode()
    request = urllib.request.Request(base, data=body, method="POST",
                                     headers={"Content-Type": "application/fhir+json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        reply = json.loads(response.read())
    failed = [e for e in reply.get("entry", []) if not e["response"]["status"].startswith("2")]
    if failed:
        sys.exit(f"rejected: {failed[:2]}")
    print(f"changed {count} patients")


if __name__ == "__main__":
    main()
