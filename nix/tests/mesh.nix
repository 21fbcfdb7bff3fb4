# A three-machine NixOS VM test: the module starts shoal on each, they join through the first,
# a signed file uploaded on one reaches the others, and a schedule on one is visible on all.
# Run: nix build .#checks.x86_64-linux.mesh
{ pkgs, module, package }:

let
  keys = {
    a = "tcrDGHuUCZrgzmeQGCplJ50wGwX3dgtaL0BOcsZG1J8=";
    b = "jVC9MjcdZ1I6Lz1Wy2Z2AKC37CGA/Tl2WE1Wcyr6WMQ=";
    c = "l/aPnlvmIpoMVdSn9hBr6BkIQ2oAvPGqmxdkKd/dGng=";
  };
  node = name: { ... }: {
    imports = [ module ];
    services.shoal = {
      enable = true;
      inherit package;
      openFirewall = true;
      keyFile = "/etc/shoal-test/node.key";
      bootstrapNodes = pkgs.lib.optional (name != "a") "a:7946";
      # Node a's key signs the test file.
      files."motd" = [ keys.a ];
      settings = {
        node.name = name;
        cluster.listen = "0.0.0.0:7946";
        network.name = "vm-test";
        network.trusted_nodes = builtins.attrValues keys;
        schedules = pkgs.lib.optional (name == "b") {
          id = "hello";
          schedule = "* * * * * *";
          command = [ "echo" "hello from b" ];
        };
      };
    };
    # Test-only key, copied out of the store with owner-only permissions.
    environment.etc."shoal-test/node.key" = {
      source = ./keys + "/node-${name}.key";
      mode = "0400";
    };
  };
in
pkgs.testers.runNixOSTest {
  name = "shoal-mesh";
  nodes = { a = node "a"; b = node "b"; c = node "c"; };
  testScript = ''
    start_all()
    for m in (a, b, c):
        m.wait_for_unit("shoal.service")
        m.wait_until_succeeds("shoal members | grep -c alive | grep -qx 3", timeout=60)
    a.succeed("echo 'welcome' > /tmp/motd && shoal file update /tmp/motd --name motd --key-path /etc/shoal-test/node.key")
    for m in (b, c):
        m.wait_until_succeeds("shoal file get motd | grep -q welcome", timeout=60)
    c.wait_until_succeeds("shoal schedules | grep -q hello", timeout=60)
    c.wait_until_succeeds("shoal schedules | grep hello | grep -q success", timeout=60)
    # A config change is applied by a reload, not a restart.
    b.succeed("systemctl reload shoal")
    b.succeed("systemctl is-active shoal")
  '';
}
