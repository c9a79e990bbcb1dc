"""SHA-256 of every table the generators write, for the default params and a variant for each of the paper's
experiments: the check that a refactoring leaves the data byte for byte as it was.

Runs the CLI (`instdiv generate`, `code-data`, `mix`) in a temporary directory per variant, so it checks what
users get, whatever the package's internals. Run it before and after a change and diff the two files:

    python scripts/data_hashes.py [params.yaml] > hashes.json
"""

import copy
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

base = yaml.safe_load(Path(sys.argv[1] if len(sys.argv) > 1 else "params.yaml").read_text())
VARIANTS = {
    "default": {},
    "patterns": {"rewrite": {"holdout": "patterns", "n_unseen_instructions": 64}},
    "skew": {"rewrite": {"n_instructions": 600, "skew": 0.2}},
    "examples_per_instruction": {"rewrite": {"total_examples": None, "examples_per_instruction": 20}},
    "families": {"rewrite": {"pattern_length": 8, "replacement_length": 8, "input_length": 16, "total_examples": 30000,
                              "n_instructions": 250, "families": ["repeat", "periodic", "mirror"], "family_k": [3, 4]}},
    "occurrences": {"rewrite": {"pattern_length": 2, "replacement_length": 2, "input_length": 30, "total_examples": 30000,
                                 "test_occurrences": [1, 10], "n_instructions": 300, "occurrences": [1, 3, 5, 8, 10]}},
    "encrypted": {"rewrite": {"encrypt": True, "noop_share": 0.4, "total_examples": 40000, "n_instructions": 2000,
                               "skew": 0.1}},
}
out = {}
for name, over in VARIANTS.items():
    p = copy.deepcopy(base)
    for s, kv in over.items():
        p[s].update(kv)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(p))
        cmds = [["instdiv", "generate"]]
        if name == "default":
            cmds += [["instdiv", "code-data"]] + [["instdiv", "mix", str(x)] for x in p["mix"]["general_percents"]]
        for c in cmds:
            subprocess.run(c, cwd=tmp, check=True, capture_output=True)
        for f in sorted(Path(tmp, "data").rglob("*.parquet")):
            out[f"{name}:{f.relative_to(tmp)}"] = hashlib.sha256(f.read_bytes()).hexdigest()
        print(name, "done", file=sys.stderr, flush=True)
json.dump(out, sys.stdout, indent=1, sort_keys=True)
