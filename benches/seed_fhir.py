#!/usr/bin/env python3
"""Loads a Bulk Data folder into a FHIR server with batch Bundles of PUTs (standard library only).

    python3 benches/seed_fhir.py BASE_URL FOLDER [--batch 500] [--workers 1]
Prints how many resources the server accepted and rejected.
"""
import argparse
import concurrent.futures
import json
import pathlib
import urllib.error
import urllib.request


def batches(folder, size, base):
    batch = []
    for kind in ["Patient", "Condition", "Procedure", "Observation"]:
        for path in sorted(pathlib.Path(folder).glob(f"{kind}*.ndjson")):
            with open(path) as lines:
                for line in lines:
                    resource = json.loads(line)
                    url = f"{resource['resourceType']}/{resource['id']}"
                    # A fullUrl per entry: relative references inside a Bundle resolve against it
                    # (HAPI's validator rejects them without one).
                    batch.append({"fullUrl": f"{base.rstrip('/')}/{url}", "resource": resource,
                                  "request": {"method": "PUT", "url": url}})
                    if len(batch) == size:
                        yield batch
                        batch = []
    if batch:
        yield batch


def send(base, entries):
    body = json.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}).encode()
    request = urllib.request.Request(base, data=body, method="POST",
                                     headers={"Content-Type": "application/fhir+json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            reply = json.loads(response.read())
    except urllib.error.HTTPError as error:
        # The server's reasons (an OperationOutcome), errors only.
        outcome = json.loads(error.read() or b"{}")
        for issue in outcome.get("issue", []):
            if issue.get("severity") in ("error", "fatal"):
                print(f"{issue.get('diagnostics')} at {issue.get('location')}")
        raise
    statuses = [e.get("response", {}).get("status", "") for e in reply.get("entry", [])]
    rejected = [s for s in statuses if not s.startswith("2")]
    if rejected:
        print(f"rejected: {rejected[:3]}")
    return len(statuses) - len(rejected), len(rejected)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("folder")
    parser.add_argument("--batch", type=int, default=500)
    # One at a time: HFS (SQLite) rejects entries of concurrent batches with 503.
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    accepted = rejected = 0
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        for ok, bad in pool.map(lambda b: send(args.base, b), batches(args.folder, args.batch, args.base)):
            accepted += ok
            rejected += bad
    print(f"seeded {accepted} resources, {rejected} rejected")


if __name__ == "__main__":
    main()
