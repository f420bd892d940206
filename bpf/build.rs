//! Compiles the eBPF C programs in `c/` into one object with clang.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("datapath.o");
    for file in ["c/datapath.c", "c/datapath.h"] {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    // <asm/types.h> lives under the multiarch include directory on Debian.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_owned());
    let multiarch = format!("/usr/include/{arch}-linux-gnu");

    let output = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", "c/datapath.c", "-o"])
        .arg(&object)
        .output();
    match output {
        Err(error) => panic!(
            "cannot run `{clang}` to compile the eBPF programs ({error}); install clang, llvm and \
             libbpf-dev (`make test` installs them: scripts/install-deps.sh)"
        ),
        Ok(output) if !output.status.success() => panic!(
            "`{clang}` failed to compile bpf/c/datapath.c (are libbpf-dev and the kernel headers \
             installed? `make test` installs them):\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Ok(_) => {}
    }
}
