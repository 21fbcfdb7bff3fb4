# The shoal package, built from this checkout with the committed Cargo.lock.
{ lib, rustPlatform }:

rustPlatform.buildRustPackage {
  pname = "shoal";
  version = (lib.importTOML ../Cargo.toml).package.version;

  src = lib.cleanSourceWith {
    src = lib.cleanSource ../.;
    filter = path: _type: baseNameOf path != "target";
  };

  cargoLock.lockFile = ../Cargo.lock;

  # The integration tests start QUIC agents on loopback; the Nix sandbox allows that, but keep
  # package builds fast and run the suite in CI instead.
  doCheck = false;

  meta = {
    description = "Peer-to-peer agent for fleets: SWIM membership over QUIC, signed replicated state";
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "shoal";
    platforms = lib.platforms.linux;
  };
}
