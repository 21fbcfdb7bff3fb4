# The shoal package, built from this checkout with the committed Cargo.lock.
{ lib, rustPlatform, installShellFiles }:

rustPlatform.buildRustPackage {
  pname = "shoal";
  version = (lib.importTOML ../Cargo.toml).package.version;

  src = lib.cleanSourceWith {
    src = lib.cleanSource ../.;
    filter = path: _type: baseNameOf path != "target";
  };

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [ installShellFiles ];

  # Completions and the man page come from the CLI definition itself; the systemd unit from
  # contrib/ (the NixOS module writes its own service, with the same settings).
  postInstall = ''
    installShellCompletion --cmd shoal \
      --bash <($out/bin/shoal completions bash) \
      --zsh <($out/bin/shoal completions zsh) \
      --fish <($out/bin/shoal completions fish)
    $out/bin/shoal man > shoal.1
    installManPage shoal.1
    install -Dm644 contrib/shoal.service $out/lib/systemd/system/shoal.service
    substituteInPlace $out/lib/systemd/system/shoal.service --replace-fail /usr/bin/shoal $out/bin/shoal
  '';

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
