#!/usr/bin/env bash
# Runs the README's examples as pasted, against the local cluster and the installed release.
#
# A README code block is part of the test when the line before it is a marker comment:
#   <!-- readme-test -->                     run this ```sh block
#   <!-- readme-test: expect=TEXT -->        ... and its output (stdout+stderr) must contain TEXT
#                                            (the key may repeat; quote TEXT with spaces: expect="a b")
#   <!-- readme-test: file=NAME -->          write this block (YAML, ...) to NAME (removed at the end)
# Blocks run in README order from the repository root (where a reader of the README stands after
# `make demo`), each under `set -euo pipefail`, with variables and background jobs carried over
# from block to block as in one terminal. The first failing block
# or missing expectation fails the test and prints that block's output. Background jobs started by
# the blocks (port-forward) are killed at the end, and namespaces in ${README_NAMESPACES} are
# deleted before and after (the README's examples use team-a).
#
# Usage: e2e/tests/readme-examples.sh [README.md]. Expects `make install` to have run; kubectl,
# grpcurl (e2e/lib/build-k8s.sh grpcurl) and the airlock CLI (target/debug/airlock) on PATH.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
README=${1:-$ROOT/README.md}
NAMESPACES=${README_NAMESPACES:-team-a}
WORK=$(mktemp -d /tmp/readme-examples.XXXXXX)

# Extract the marked blocks into WORK/blocks/NNN.{sh,file} plus WORK/blocks/NNN.meta.
mkdir -p "$WORK/blocks"
python3 - "$README" "$WORK/blocks" <<'PY' || exit 1
import re, sys, pathlib
readme, out = pathlib.Path(sys.argv[1]).read_text().splitlines(), pathlib.Path(sys.argv[2])
n, i, marker = 0, 0, None
while i < len(readme):
    line = readme[i]
    m = re.fullmatch(r"\s*<!--\s*readme-test(?::\s*(.*?))?\s*-->\s*", line)
    if m:
        marker = m.group(1) or ""
        i += 1
        continue
    if marker is not None and line.startswith("```"):
        body = []
        i += 1
        while i < len(readme) and not readme[i].startswith("```"):
            body.append(readme[i]); i += 1
        n += 1
        keys = [(k, q if q else v) for k, v, q in re.findall(r'(\w+)=("([^"]*)"|\S+)', marker)]
        files = [v for k, v in keys if k == "file"]
        expects = [v for k, v in keys if k == "expect"]
        unknown = [k for k, _ in keys if k not in ("file", "expect")]
        if unknown:
            sys.exit(f"README line {i}: unknown readme-test key(s) {unknown}")
        kind = "file" if files else "sh"
        (out / f"{n:03}.{kind}").write_text("\n".join(body) + "\n")
        (out / f"{n:03}.meta").write_text("\n".join([f"line {i}"] + [f"file {f}" for f in files] + [f"expect {e}" for e in expects]) + "\n")
        marker = None
    elif marker is not None and line.strip():
        sys.exit(f"README line {i+1}: a readme-test marker must be followed by a code block")
    i += 1
if n == 0:
    sys.exit("no <!-- readme-test --> blocks found in the README")
print(f"{n} README blocks to run")
PY

cleanup_namespaces() { for ns in $NAMESPACES; do kubectl delete namespace "$ns" --ignore-not-found --wait=true --timeout=120s >/dev/null 2>&1 || true; done; }
cleanup_namespaces

# Each block runs in its own `bash -euo pipefail` (so a failing command fails the block, as `set -e`
# is not suspended by the runner) with every variable exported (`set -a`); the environment it ends
# with is saved and loaded by the next block, so state carries over as in one terminal. Background
# jobs (port-forward) outlive their block and are killed at the end.
STATE=$WORK/state.env
echo "export README_EXAMPLES_RUN=$WORK" > "$STATE"
rc=0
WROTE=()
for meta in "$WORK"/blocks/*.meta; do
  id=$(basename "$meta" .meta)
  where="block $id, README $(sed -n 's/^line //p' "$meta")"
  if [ -f "$WORK/blocks/$id.file" ]; then
    name=$(sed -n 's/^file //p' "$meta")
    cp "$WORK/blocks/$id.file" "$ROOT/$name" && WROTE+=("$ROOT/$name") && echo "ok   - $where: wrote $name"
    continue
  fi
  out=$WORK/blocks/$id.out
  (cd "$ROOT" && bash -c 'set -a; source "$1"; set -euo pipefail; source "$2"; export -p > "$1.next"' \
    readme-block "$STATE" "$WORK/blocks/$id.sh") > "$out" 2>&1 < /dev/null
  status=$?
  why=""
  [ $status = 0 ] || why="exited $status"
  if [ -z "$why" ]; then
    while read -r exp; do
      grep -qF -- "$exp" "$out" || { why="its output lacks '$exp'"; break; }
    done < <(sed -n 's/^expect //p' "$meta")
  fi
  if [ -n "$why" ]; then
    echo "FAIL - $where: $why"; echo "---- block"; cat "$WORK/blocks/$id.sh"; echo "---- output"; cat "$out"; echo "----"
    rc=1; break
  fi
  mv "$STATE.next" "$STATE"
  echo "ok   - $where"
done

# Background jobs the blocks started (port-forward) carry README_EXAMPLES_RUN in their
# environment: end those, and nothing else on the machine.
for env in /proc/[0-9]*/environ; do
  if { tr '\0' '\n' < "$env"; } 2>/dev/null | grep -qxF "README_EXAMPLES_RUN=$WORK"; then
    pid=${env#/proc/}; kill "${pid%/environ}" 2>/dev/null || true
  fi
done
cleanup_namespaces
rm -f "${WROTE[@]}"
if [ $rc = 0 ]; then rm -rf "$WORK"; echo "1 passed, 0 failed"; else echo "0 passed, 1 failed (work dir $WORK)"; fi
exit $rc
