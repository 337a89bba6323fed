"""What tests/object_lock.rs does to a bucket behind the broker's back, with
boto3 (the AWS SDK) against moto:

    s3_lock.py ENDPOINT create-plain BUCKET
    s3_lock.py ENDPOINT versions BUCKET PREFIX      -> [{key, version, mode, until, latest}]
    s3_lock.py ENDPOINT delete-version BUCKET KEY VERSION  -> {"ok": bool, "code": ...}
    s3_lock.py ENDPOINT delete-version-bypass BUCKET KEY VERSION  (governance bypass)
    s3_lock.py ENDPOINT overwrite BUCKET KEY       -> {"ok": bool, "version": ...}
    s3_lock.py ENDPOINT delete BUCKET KEY          -> {"ok": bool, "delete_marker": bool}

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Prints JSON.
"""
import json
import sys

import boto3
from botocore.exceptions import ClientError


def main():
    endpoint, action, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
    args = sys.argv[4:]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        if action == "create-plain":
            s3.create_bucket(Bucket=bucket)
            out = {"ok": True}
        elif action == "versions":
            out = []
            listing = s3.list_object_versions(Bucket=bucket, Prefix=args[0])
            for v in listing.get("Versions", []):
                h = s3.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
                until = h.get("ObjectLockRetainUntilDate")
                out.append({
                    "key": v["Key"], "version": v["VersionId"], "latest": v["IsLatest"],
                    "mode": h.get("ObjectLockMode"),
                    "until": until.isoformat() if until else None,
                })
        elif action == "delete-version":
            s3.delete_object(Bucket=bucket, Key=args[0], VersionId=args[1])
            out = {"ok": True}
        elif action == "delete-version-bypass":
            # Governance mode: a caller allowed to bypass it may delete.
            s3.delete_object(Bucket=bucket, Key=args[0], VersionId=args[1],
                             BypassGovernanceRetention=True)
            out = {"ok": True}
        elif action == "overwrite":
            r = s3.put_object(Bucket=bucket, Key=args[0], Body=b"not a segment")
            out = {"ok": True, "version": r.get("VersionId")}
        elif action == "delete":
            r = s3.delete_object(Bucket=bucket, Key=args[0])
            out = {"ok": True, "delete_marker": bool(r.get("DeleteMarker"))}
        else:
            raise SystemExit(f"unknown action {action}")
    except ClientError as e:
        out = {"ok": False, "code": e.response["Error"]["Code"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
