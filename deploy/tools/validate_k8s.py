#!/usr/bin/python3
"""Validates Kubernetes manifests against the strict JSON schemas in a folder.

    validate_k8s.py [--elsewhere GROUP]... SCHEMA_DIR FILE...   (FILE may be - for stdin)

Schemas are named <kind>-<group>-<version>.json (core group omitted), as in
../shared/k8s-schemas. Every object must have a schema (an unknown kind is an error, so a
kind can not slip through unchecked) and validate against it; strict schemas reject
misspelt fields. Also checks that names are unique per kind and namespace. Exit 1 on any
error; prints one line per object. Objects of an API group named by --elsewhere (e.g.
gateway.networking.k8s.io, which has no schema here) are listed as validated elsewhere
(tools/validate_gateway_api.mjs) instead of failing.
"""
import json
import os
import sys

import jsonschema
import yaml


def schema_name(obj):
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    kind = obj.get("kind", "").lower()
    parts = [kind] + ([group.split(".")[0]] if group else []) + [version]
    return "-".join(parts) + ".json"


def main():
    args, elsewhere = sys.argv[1:], set()
    while len(args) >= 2 and args[0] == "--elsewhere":
        elsewhere.add(args[1])
        args = args[2:]
    if len(args) < 2:
        sys.exit(__doc__)
    schema_dir, files = args[0], args[1:]
    cache, seen, errors, count, skipped = {}, set(), 0, 0, 0
    for path in files:
        text = sys.stdin.read() if path == "-" else open(path).read()
        for obj in yaml.safe_load_all(text):
            if obj is None:
                continue
            count += 1
            meta = obj.get("metadata") or {}
            ident = f'{path}: {obj.get("kind")}/{meta.get("name")}'
            key = (obj.get("kind"), meta.get("namespace"), meta.get("name"))
            if key in seen:
                print(f"FAIL {ident}: duplicate object")
                errors += 1
            seen.add(key)
            if obj.get("apiVersion", "").rpartition("/")[0] in elsewhere:
                print(f"else {ident}: {obj.get('apiVersion')} is validated elsewhere")
                skipped += 1
                continue
            name = schema_name(obj)
            file = os.path.join(schema_dir, name)
            if not os.path.exists(file):
                print(f"FAIL {ident}: no schema {name} for {obj.get('apiVersion')} {obj.get('kind')}")
                errors += 1
                continue
            if name not in cache:
                with open(file) as f:
                    schema = json.load(f)
                cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
                cache[name] = cls(schema)
            problems = sorted(cache[name].iter_errors(obj), key=lambda e: list(e.absolute_path))
            if problems:
                errors += 1
                for p in problems[:10]:
                    where = "/".join(str(x) for x in p.absolute_path) or "(root)"
                    print(f"FAIL {ident}: {where}: {p.message[:300]}")
            else:
                print(f"ok   {ident}")
    print(f"{count} objects, {errors} with errors" +
          (f", {skipped} validated elsewhere" if skipped else ""))
    return 1 if errors or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
