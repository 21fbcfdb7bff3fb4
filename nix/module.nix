# NixOS module for the shoal agent.
#
#   services.shoal = {
#     enable = true;
#     bootstrapNodes = [ "10.0.0.1:7946" "10.0.0.2:7946" ];
#     settings.network.network_key = "<network public key>";
#     settings.network.certificate_file = "/etc/shoal/node.cert";
#     files."app.conf" = [ "<signer public key>" ];
#     environmentFile = "/run/secrets/shoal.env";   # DISCORD_WEBHOOK_URL=..., RESTIC_PASSWORD=...
#     openFirewall = true;
#   };
#
# The configuration is rendered to /etc/shoal/shoal.toml; changing it reloads the agent
# (SIGHUP) instead of restarting it, so [files], [[schedules]], [health], webhooks and the
# bootstrap list apply live.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.shoal;
  format = pkgs.formats.toml { };

  settings = lib.recursiveUpdate cfg.settings (
    lib.optionalAttrs (cfg.bootstrapNodes != [ ]) { cluster.bootstrap = cfg.bootstrapNodes; }
    // lib.optionalAttrs (cfg.files != { }) { files = cfg.files; }
    // lib.optionalAttrs (cfg.keyFile != null) {
      # systemd hands the key over as a credential; the config expands the variable.
      node.key_file = "\${CREDENTIALS_DIRECTORY}/node.key";
    }
  );
  configFile = format.generate "shoal.toml" settings;

  listen = settings.cluster.listen or "0.0.0.0:7946";
  clusterPort = lib.toInt (lib.last (lib.splitString ":" listen));
in
{
  options.services.shoal = {
    enable = lib.mkEnableOption "the shoal mesh agent";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The shoal package to run.";
    };

    settings = lib.mkOption {
      type = lib.types.submodule { freeformType = format.type; };
      default = { };
      description = ''
        shoal configuration, rendered to TOML (see config/shoal.example.toml). Secrets belong
        in `environmentFile` and are referenced here as `''${VAR}`.
      '';
      example = {
        network.trusted_nodes = [ "azwT+VhTxA+BF73Hwq0uqdXHG8XvHU2BknoVXgmEjww=" ];
        health.checks = [{ name = "api"; type = "http"; url = "http://127.0.0.1:8080/healthz"; }];
      };
    };

    bootstrapNodes = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "10.0.0.1:7946" "seed.example.internal:7946" ];
      description = "`host:port` of nodes to join through (`[cluster] bootstrap`).";
    };

    files = lib.mkOption {
      type = lib.types.attrsOf (lib.types.listOf lib.types.str);
      default = { };
      example = { "app.conf" = [ "hnuGNlUHyozNi1egatsI9GGx7dh+bNPHdugf5J9yJHQ=" ]; };
      description = "File names this node accepts, each with the public keys allowed to sign it (`[files]`).";
    };

    keyFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = ''
        The node's secret key file. When null the agent creates one in its state directory on
        first start. Passed to the service as a systemd credential, never copied to the store
        by this module (use a path outside the store, e.g. from sops-nix or agenix).
      '';
    };

    environmentFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/run/secrets/shoal.env";
      description = "`VAR=value` lines added to the agent's environment (webhook URLs, repository passwords).";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the cluster's UDP port (from `settings.cluster.listen`, default 7946).";
    };

    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "--log-level" "shoal=debug" ];
      description = "Extra arguments to `shoal agent`.";
    };
  };

  config = lib.mkIf cfg.enable {
    services.shoal.settings.node.state_dir = lib.mkDefault "/var/lib/shoal";

    environment.etc."shoal/shoal.toml".source = configFile;
    environment.systemPackages = [ cfg.package ];

    networking.firewall.allowedUDPPorts = lib.mkIf cfg.openFirewall [ clusterPort ];

    # The agent asks for 2 MiB UDP socket buffers (file bodies arrive in bursts); the kernel
    # grants at most these. Defaults only: a value set elsewhere wins.
    boot.kernel.sysctl."net.core.rmem_max" = lib.mkDefault 4194304;
    boot.kernel.sysctl."net.core.wmem_max" = lib.mkDefault 4194304;

    systemd.services.shoal = {
      description = "shoal mesh agent";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      # A new config is applied live by the agent (SIGHUP), not by a restart.
      reloadTriggers = [ configFile ];
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = lib.escapeShellArgs ([ (lib.getExe cfg.package) "agent" "--config" "/etc/shoal/shoal.toml" ] ++ cfg.extraArgs);
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "on-failure";
        RestartSec = "2s";
        WatchdogSec = "30s";
        TimeoutStopSec = "15s";
        EnvironmentFile = lib.mkIf (cfg.environmentFile != null) cfg.environmentFile;
        LoadCredential = lib.mkIf (cfg.keyFile != null) [ "node.key:${toString cfg.keyFile}" ];

        DynamicUser = true;
        StateDirectory = "shoal";
        StateDirectoryMode = "0700";
        ConfigurationDirectory = "shoal";
        UMask = "0077";
        LimitNOFILE = 65536;

        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" "AF_NETLINK" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged @resources" ];
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
