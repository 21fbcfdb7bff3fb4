#!/usr/bin/env bash
# Regenerates build/symbol-order.txt: the functions an agent runs, which build.rs asks the
# linker to place first (see build.rs for why). Run as root (the mesh bench needs it), on an
# otherwise idle machine, from the repository root:
#
#   contrib/symbol-order.sh
#
# It profiles agent n0 of two 10-agent mesh benchmark runs under valgrind's callgrind (every
# function it enters is recorded, however rarely: sampling would miss the ones run once) and
# writes the symbols of every function n0 ran that the binary defines, most instructions first.
# Needs valgrind and python3. Takes about 10 minutes. Regenerate after dependency upgrades or a
# toolchain change: symbol names carry hashes that then change, and a stale list lays out less.
set -euo pipefail

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
SHOAL_NO_SYMBOL_ORDER=1 cargo build --release --bin shoal
cp target/release/shoal "$work/shoal"
cargo bench --bench mesh --no-run

cat > "$work/wrap.sh" <<WRAP
#!/bin/sh
# The first agent to start runs under callgrind; the others run normally.
if mkdir "$work/lock" 2>/dev/null; then
  exec valgrind --tool=callgrind --demangle=no --dump-instr=no --compress-strings=no \
    --compress-pos=no --callgrind-out-file="$work/cg/out.%p" "$work/shoal" "\$@"
fi
exec "$work/shoal" "\$@"
WRAP
chmod +x "$work/wrap.sh"
mkdir "$work/cg"

profile() {
  rm -rf "$work/lock"
  env SHOAL_MESH_BIN="$work/wrap.sh" SHOAL_MESH_NODES=10 SHOAL_MESH_TOOLS=shoal "$@" \
    cargo bench --bench mesh >"$work/bench.log" 2>&1 &
  local bench=$!
  # The harness ends agents with SIGKILL, which loses callgrind's final dump: dump as it goes.
  while kill -0 "$bench" 2>/dev/null; do
    sleep 10
    callgrind_control -d >/dev/null 2>&1 || true
  done
  wait "$bench" || { tail -20 "$work/bench.log"; exit 1; }
}
profile SHOAL_MESH_ONLY=join,idle,small,files,partition,catchup SHOAL_MESH_SETTLE_SECS=20 \
  SHOAL_MESH_IDLE_SECS=20 SHOAL_MESH_REPS=5 SHOAL_MESH_FILE_REPS=2
profile SHOAL_MESH_ONLY=join,stop,loss,kill SHOAL_MESH_KILLS=2 SHOAL_MESH_LOSS_SECS=15

python3 - "$work/shoal" "$work"/cg/out.* >build/symbol-order.txt <<'PY'
import collections, subprocess, sys

binary, dumps = sys.argv[1], sys.argv[2:]
defined = set()
for line in subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tTwW":
        defined.add(parts[2])
cost = collections.Counter()
for dump in dumps:
    fn, skip = None, False
    for line in open(dump, errors="replace"):
        if line.startswith("fn="):
            fn = line[3:].strip()
        elif line.startswith("calls="):
            skip = True  # the next line is the call's inclusive cost, not fn's own
        elif line[:1].isdigit() and fn:
            if not skip:
                fields = line.split()
                cost[fn] += int(fields[1]) if len(fields) > 1 else 0
            skip = False
        elif line.startswith("cfn="):
            cost[line[4:].strip()] += 0
ran = [f for f in cost if f in defined]
ran.sort(key=lambda f: (-cost[f], f))
print("\n".join(ran))
print(f"{len(ran)} functions", file=sys.stderr)
PY
