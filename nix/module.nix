# NixOS module for the shoal agent. Minimal for now: the operations work (issue 7) adds
# hardening, sd_notify, firewall and secret handling.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.shoal;
  format = pkgs.formats.toml { };
  configFile = format.generate "shoal.toml" cfg.settings;
in
{
  options.services.shoal = {
    enable = lib.mkEnableOption "the shoal mesh agent";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The shoal package to run.";
    };

    settings = lib.mkOption {
      type = format.type;
      default = { };
      description = "shoal configuration, rendered to TOML. See config/shoal.example.toml.";
      example = {
        cluster.bootstrap = [ "10.0.0.1:7946" ];
        network.trusted_nodes = [ "azwT+VhTxA+BF73Hwq0uqdXHG8XvHU2BknoVXgmEjww=" ];
      };
    };
  };

  config = lib.mkIf cfg.enable {
    services.shoal.settings.node.state_dir = lib.mkDefault "/var/lib/shoal";

    systemd.services.shoal = {
      description = "shoal mesh agent";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      serviceConfig = {
        ExecStart = "${lib.getExe cfg.package} agent --config ${configFile}";
        StateDirectory = "shoal";
        StateDirectoryMode = "0700";
        DynamicUser = true;
        Restart = "on-failure";
        KillSignal = "SIGTERM";
      };
    };
  };
}
