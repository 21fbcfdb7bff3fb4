#!/usr/bin/env bash
# A three-node mesh of real `shoal agent` processes on loopback, set up the way an operator
# would: a network key, a key and a certificate per node, one config file per node.
#
#   cargo build --release && SHOAL=target/release/shoal examples/local-cluster.sh
#
# Ctrl-C stops the agents (they leave the mesh) and removes the temporary directory.
set -euo pipefail

SHOAL=${SHOAL:-shoal}
dir=$(mktemp -d -t shoal-example-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

network=$("$SHOAL" network new --out "$dir/network.key" 2>/dev/null)
echo "network id: $network"

for i in 1 2 3; do
  mkdir -p "$dir/node$i"
  pub=$("$SHOAL" keygen --out "$dir/node$i/node.key" 2>/dev/null)
  "$SHOAL" cert sign --network-key "$dir/network.key" --node "$pub" --name "node$i" \
    --valid-for 1d --out "$dir/node$i/node.cert" >/dev/null 2>&1
  cat > "$dir/node$i/shoal.toml" <<TOML
[node]
state_dir = "$dir/node$i"

[cluster]
listen = "127.0.0.1:$((17945 + i))"
bootstrap = ["127.0.0.1:17946"]

[network]
network_key = "$network"
certificate_file = "node.cert"

[http]
listen = "127.0.0.1:$((17330 + i))"
TOML
  "$SHOAL" config check "$dir/node$i/shoal.toml" >/dev/null
  "$SHOAL" agent --config "$dir/node$i/shoal.toml" 2>"$dir/node$i/agent.log" &
  pids+=($!)
done

for _ in $(seq 50); do
  alive=$("$SHOAL" status --url http://127.0.0.1:17331 --json 2>/dev/null | grep -o '"alive": *[0-9]*' | grep -o '[0-9]*$' || true)
  [ "${alive:-0}" = 3 ] && break
  sleep 0.2
done
"$SHOAL" members --url http://127.0.0.1:17331
echo "logs in $dir/node*/agent.log; press Ctrl-C to stop"
wait
