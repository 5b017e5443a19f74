"""Test driver for the phase engine until the CLI's `build --base-tree` runs it.

Usage: python drive_engine.py '<json of config flags>' [break points]. Resolves a Config, enters the private
namespaces and runs every phase on --base-tree, like `sles-ipa-builder build` will.
"""

from __future__ import annotations

import json
import sys

from sles_ipa_builder import config, context, log, namespace, phases
from sles_ipa_builder.errors import BuildError


def main() -> int:
    cfg = config.resolve(cli=json.loads(sys.argv[1]))
    log.setup(verbosity=1)
    namespace.enter()
    ctx = context.make_context(cfg, breakpoints=set(sys.argv[2].split(",")) if len(sys.argv) > 2 else None)
    log.attach_file(ctx.log_path)
    try:
        phases.build_tree_only(ctx)
    except BuildError as e:
        print("\n".join(f"  | {line}" for line in e.tail), file=sys.stderr)
        print(f"error: {e.message}\nhint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
