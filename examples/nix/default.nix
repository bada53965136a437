# A small package set for `nixtest run --set nix:FILE`, self-contained: no
# nixpkgs, nothing downloaded.  Every package is built by the machine's own
# /bin/sh from files the machine has (the scripts in src/, its coreutils,
# sed, grep and python3), so Nix must build with `sandbox = false`, as
# Debian's nix-bin does.
#
#   nix-env -qaP -f examples/nix            # what the set holds
#   nixtest run --set nix:examples/nix --tests examples/nix/package_tests
#
# Package names are attribute paths: `hello`, `tools.sed`.  `tools` says
# recurseForDerivations = true (what nixpkgs' recurseIntoAttrs does), so that
# `nix-env -qa` lists what is inside; nixtest finds `tools.sed` either way.
{ system ? builtins.currentSystem }:

let
  # A derivation built by `/bin/sh -c SCRIPT`, finding the host's tools on PATH.
  build = name: description: script: attrs:
    derivation ({
      inherit name system;
      builder = "/bin/sh";
      args = [ "-c" ("set -e\n" + script) ];
      PATH = "/usr/bin:/bin";
    } // attrs) // { meta = { inherit description; }; };

  # A package of symlinks to programs this machine has (its version is nominal).
  hostTools = name: description: tools:
    build name description ''
      mkdir -p "$out/bin"
      for tool in ${toString tools}; do
        # the program, not a shell builtin of the same name (echo, test...)
        for dir in /usr/bin /bin; do
          if [ -x "$dir/$tool" ]; then ln -s "$dir/$tool" "$out/bin/$tool"; break; fi
        done
        [ -e "$out/bin/$tool" ] || { echo "no $tool on this machine" >&2; exit 1; }
      done
    '' { };

  # A package whose bin/NAME is a script from src/, with @greeting@ replaced.
  script = name: description: src:
    build name description ''
      mkdir -p "$out/bin"
      sed -e "s|@greeting@|$greeting|g" "$src" > "$out/bin/${(builtins.parseDrvName name).name}"
      chmod 0555 "$out/bin/${(builtins.parseDrvName name).name}"
    '' { inherit src greeting; };

  greeting = build "greeting-1.0" "The text hello prints (a data package hello depends on)" ''
    mkdir -p "$out/share/greeting"
    echo 'Hello, world!' > "$out/share/greeting/hello.txt"
    echo 'Goodbye, world!' > "$out/share/greeting/goodbye.txt"
  '' { };

in
{
  inherit greeting;

  hello = script "hello-2.12.1" "A GNU hello look-alike: prints a greeting" ./src/hello.sh;

  # Its test fails on purpose: src/goodbye.sh has a bug.
  goodbye = script "goodbye-1.0" "Says goodbye (with a bug its test finds)" ./src/goodbye.sh;

  coreutils = hostTools "coreutils-9.1" "The machine's core utilities" [
    "basename" "cat" "chmod" "cp" "cut" "date" "dirname" "echo" "env" "false" "head" "id"
    "ln" "ls" "mkdir" "mv" "printf" "readlink" "rm" "sleep" "sort" "stat" "tail" "test"
    "touch" "tr" "true" "uname" "uniq" "wc"
  ];

  python3 = hostTools "python3-3.11" "The machine's Python 3" [ "python3" ];

  tools = {
    recurseForDerivations = true;
    sed = hostTools "sed-4.9" "The machine's GNU sed" [ "sed" ];
    grep = hostTools "grep-3.8" "The machine's GNU grep" [ "grep" ];
  };
}
