"""Prints, as JSON, what an interpreter sees: its prefixes and its module path."""

import json
import site
import sys

print(
    json.dumps(
        {
            "prefix": sys.prefix,
            "base_prefix": sys.base_prefix,
            "executable": sys.executable,
            "path": sys.path,
            "site": site.getsitepackages(),
        }
    )
)
