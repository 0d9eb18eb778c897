//! The Debian package: `scripts/deb` builds it from the debug binary (so no
//! release build is needed here), the `.deb` is unpacked into a temporary
//! root, and its contents, modes, maintainer scripts and systemd unit are
//! checked; the packaged binary then runs `check` on the packaged example
//! config with the demo certificates from `certs-test/` put where that
//! config expects them.
//!
//! Needs Debian's `dpkg-deb`, `dpkg-shlibdeps` (dpkg-dev) and `strip`
//! (binutils). `systemd-analyze verify` runs where the command exists; only
//! that step is skipped, with a note, elsewhere.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeed(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// `scripts/deb` with the given arguments, its scratch files under
/// `scratch` (TMPDIR) so that nothing can land outside the test's directory.
fn deb_script(scratch: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(REPO).join("scripts/deb"))
        .current_dir(REPO)
        .env("TMPDIR", scratch);
    cmd
}

fn dpkg_architecture() -> String {
    let out = succeed(Command::new("dpkg").arg("--print-architecture"));
    text(&out.stdout).trim().to_string()
}

/// The fields of a control file (single-line values; continuation lines
/// are kept out).
fn control_fields(control: &str) -> BTreeMap<String, String> {
    control
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `dpkg-deb --contents`: path (without the leading `.`) → (mode string,
/// owner/group), e.g. "/usr/bin/portcullis" → ("-rwxr-xr-x", "root/root").
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    let out = succeed(Command::new("dpkg-deb").arg("--contents").arg(deb));
    text(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 6, "unexpected dpkg-deb --contents line: {l}");
            let path = f[5].trim_start_matches('.').trim_end_matches('/');
            let path = if path.is_empty() { "/" } else { path };
            (path.to_string(), (f[0].to_string(), f[1].to_string()))
        })
        .collect()
}

/// A `key=value` line of the unit, the last one if repeated.
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

/// A TOML duration such as "30s" or "40s" in seconds (only s and m are
/// used in the packaged files).
fn seconds(d: &str) -> u64 {
    let d = d.trim().trim_matches('"');
    if let Some(m) = d.strip_suffix('m') {
        m.parse::<u64>().unwrap() * 60
    } else {
        d.strip_suffix('s').unwrap().parse().unwrap()
    }
}

/// Builds the .deb from the debug binary into `dir`/out and returns its path.
fn build_deb(dir: &Path) -> PathBuf {
    let scratch = dir.join("scratch");
    fs::create_dir(&scratch).unwrap();
    let out_dir = dir.join("out");
    let out = succeed(deb_script(&scratch).args([
        "--binary",
        BIN,
        "--out",
        out_dir.to_str().unwrap(),
        // xz would spend ~15 s of CPU on a debug binary for nothing tested here.
        "--compression",
        "gzip",
    ]));
    let deb = out_dir.join(format!(
        "portcullis_{}_{}.deb",
        env!("CARGO_PKG_VERSION"),
        dpkg_architecture()
    ));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some(deb.to_str().unwrap()),
        "the last line names the .deb; stdout:\n{stdout}"
    );
    assert!(deb.is_file(), "{} not written", deb.display());
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "scripts/deb left its staging directory behind in TMPDIR"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("libc.so.6"),
        "the linked libraries are listed:\n{stderr}"
    );
    deb
}

#[test]
fn deb_contents_unit_and_packaged_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());
    let arch = dpkg_architecture();

    // --- file list, modes and owners, as dpkg will install them
    let files = contents(&deb);
    let mut expected: Vec<String> = [
        "/",
        "/etc",
        "/etc/portcullis",
        "/etc/portcullis/portcullis.toml",
        "/etc/portcullis/tls",
        "/lib",
        "/lib/systemd",
        "/lib/systemd/system",
        "/lib/systemd/system/portcullis.service",
        "/usr",
        "/usr/bin",
        "/usr/bin/portcullis",
        "/usr/share",
        "/usr/share/doc",
        "/usr/share/doc/portcullis",
        "/usr/share/doc/portcullis/README.md",
        "/usr/share/doc/portcullis/copyright",
        "/usr/share/doc/portcullis/docs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for doc in fs::read_dir(Path::new(REPO).join("docs")).unwrap() {
        let name = doc.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            expected.push(format!("/usr/share/doc/portcullis/docs/{name}"));
        }
    }
    assert!(expected.iter().any(|p| p.ends_with("/docs/deployment.md")));
    expected.sort();
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), expected);
    for (path, (mode, owner)) in &files {
        assert_eq!(owner, "root/root", "{path} owner");
        let want = match path.as_str() {
            "/usr/bin/portcullis" => "-rwxr-xr-x",
            // The key directory: postinst hands it to group portcullis.
            "/etc/portcullis/tls" => "drwxr-x---",
            _ if mode.starts_with('d') => "drwxr-xr-x",
            _ => "-rw-r--r--",
        };
        assert_eq!(mode, want, "{path} mode");
    }

    // --- unpack: files and control area
    let root = dir.path().join("root");
    let control = dir.path().join("control");
    succeed(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    succeed(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let binary = root.join("usr/bin/portcullis");
    assert_eq!(
        fs::metadata(&binary).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    let version = succeed(Command::new(&binary).arg("--version"));
    assert_eq!(
        text(&version.stdout).trim(),
        format!("portcullis {}", env!("CARGO_PKG_VERSION"))
    );

    let mut control_files: Vec<String> = fs::read_dir(&control)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    control_files.sort();
    assert_eq!(
        control_files,
        [
            "conffiles",
            "control",
            "md5sums",
            "postinst",
            "postrm",
            "prerm"
        ]
    );
    // md5sums lists every regular file (for debsums and dpkg --verify).
    let md5sums = fs::read_to_string(control.join("md5sums")).unwrap();
    let summed: Vec<&str> = md5sums
        .lines()
        .map(|l| l.split_once("  ").expect("md5sum line").1)
        .collect();
    let regular: Vec<String> = files
        .iter()
        .filter(|(_, (mode, _))| mode.starts_with('-'))
        .map(|(p, _)| p.trim_start_matches('/').to_string())
        .collect();
    assert_eq!(summed, regular);
    assert_eq!(
        fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/portcullis/portcullis.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o755,
            "{script} is executable"
        );
        let body = fs::read_to_string(&path).unwrap();
        assert!(body.starts_with("#!/bin/sh\n"), "{script}: {body}");
        assert!(body.contains("set -e\n"), "{script} stops on errors");
        succeed(Command::new("sh").arg("-n").arg(&path));
    }
    let postinst = fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst
        .contains("adduser --quiet --system --group --no-create-home --home /nonexistent \\\n            --gecos \"portcullis MySQL/MariaDB TLS proxy\" portcullis"));
    assert!(postinst.contains("deb-systemd-helper enable portcullis.service"));
    assert!(
        !postinst.contains("deb-systemd-invoke start")
            && !postinst.contains("deb-systemd-invoke restart"),
        "postinst must not start or restart the service"
    );
    let postrm = fs::read_to_string(control.join("postrm")).unwrap();
    for never in ["deluser", "delgroup", "rm -"] {
        assert!(!postrm.contains(never), "postrm must not run {never}");
    }

    let fields = control_fields(&fs::read_to_string(control.join("control")).unwrap());
    assert_eq!(fields["Package"], "portcullis");
    assert_eq!(fields["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(fields["Architecture"], arch);
    let depends = &fields["Depends"];
    assert!(depends.starts_with("libc6 (>= "), "Depends: {depends}");
    assert!(depends.ends_with(", adduser"), "Depends: {depends}");
    // aws-lc is linked statically: no OpenSSL from the system.
    assert!(!depends.contains("libssl"), "Depends: {depends}");
    let installed_kib: u64 = fields["Installed-Size"].parse().unwrap();
    let binary_kib = fs::metadata(&binary).unwrap().len() / 1024;
    assert!(
        installed_kib >= binary_kib,
        "Installed-Size {installed_kib} KiB < the binary's {binary_kib} KiB"
    );

    // --- the unit
    let unit_path = root.join("lib/systemd/system/portcullis.service");
    let unit = fs::read_to_string(&unit_path).unwrap();
    let config_path = root.join("etc/portcullis/portcullis.toml");
    let config = fs::read_to_string(&config_path).unwrap();
    for (key, want) in [
        ("Type", "notify"),
        ("NotifyAccess", "all"),
        ("User", "portcullis"),
        ("Group", "portcullis"),
        (
            "ExecStartPre",
            "/usr/bin/portcullis check --config /etc/portcullis/portcullis.toml",
        ),
        (
            "ExecStart",
            "/usr/bin/portcullis run --config /etc/portcullis/portcullis.toml --log-format json",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("RuntimeDirectory", "portcullis"),
    ] {
        assert_eq!(unit_value(&unit, key), Some(want), "unit: {key}=");
    }
    assert!(unit.contains("\nSystemCallFilter=@system-service\n"));
    // The admin socket of the packaged config lives in the RuntimeDirectory.
    assert!(config.contains("address = \"unix:/run/portcullis/admin.sock\""));
    assert!(config.contains("address = \"unix:/run/mysqld/mysqld.sock\""));
    // So is the control socket an upgrade hands over on.
    assert!(config.contains("control_socket = \"/run/portcullis/control.sock\""));
    // systemd must not SIGKILL a drain that is still within shutdown_timeout.
    let shutdown = config
        .lines()
        .find_map(|l| l.strip_prefix("shutdown_timeout = "))
        .expect("shutdown_timeout in the packaged config");
    let stop = unit_value(&unit, "TimeoutStopSec").expect("TimeoutStopSec");
    assert!(
        seconds(stop) > seconds(shutdown),
        "TimeoutStopSec={stop} must exceed shutdown_timeout {shutdown}"
    );
    // Two fds per session, one per connection at the door and as many for
    // those closed to make room and still ending, 1024 of headroom (the
    // unit's comment).
    let sum = |key: &str| -> u64 {
        config
            .lines()
            .filter_map(|l| l.strip_prefix(key))
            .map(|v| v.parse::<u64>().unwrap())
            .sum()
    };
    let (max_connections, max_unauthenticated) =
        (sum("max_connections = "), sum("max_unauthenticated = "));
    assert!(max_connections > 0 && max_unauthenticated > 0, "{config}");
    let nofile: u64 = unit_value(&unit, "LimitNOFILE").unwrap().parse().unwrap();
    assert!(
        nofile >= 2 * max_connections + 2 * max_unauthenticated + 1024,
        "LimitNOFILE={nofile} is too small for max_connections {max_connections} and max_unauthenticated {max_unauthenticated}"
    );
    verify_unit(dir.path(), &unit, &root);

    // --- the packaged binary checks the packaged config. Relative TLS paths
    // resolve under the config's directory, here inside the temporary root.
    // `check` also makes sure the admin socket's directory exists, which
    // systemd's RuntimeDirectory= creates before ExecStartPre=, and asks the
    // backend the start-up probe's questions: the config's absolute paths,
    // /run/portcullis and /run/mysqld (this machine's own database, which
    // tests never touch), are moved into the root here.
    let run_dir = root.join("run/portcullis");
    fs::create_dir_all(&run_dir).unwrap();
    let backend = root.join("run/mysqld/mysqld.sock");
    fs::write(
        &config_path,
        config
            .replace(
                "unix:/run/portcullis/admin.sock",
                &format!("unix:{}/admin.sock", run_dir.display()),
            )
            .replace(
                "unix:/run/mysqld/mysqld.sock",
                &format!("unix:{}", backend.display()),
            ),
    )
    .unwrap();
    let check = || {
        run(Command::new(&binary)
            .arg("check")
            .arg("--config")
            .arg(&config_path))
    };
    let tls = root.join("etc/portcullis/tls");
    let before = check();
    assert_eq!(before.status.code(), Some(1), "check without certificates");
    let stderr = text(&before.stderr);
    assert!(
        stderr.contains(&format!(
            "certificate {}: No such file or directory",
            tls.join("server.pem").display()
        )),
        "{stderr}"
    );
    assert!(stderr.ends_with("4 problem(s) found\n"), "{stderr}");

    let certs = Path::new(REPO).join("certs-test");
    fs::create_dir(tls.join("crl.d")).unwrap();
    for (from, to) in [
        ("server.pem", "server.pem"),
        ("server-key.pem", "server-key.pem"),
        ("ca.pem", "ca.pem"),
        ("crl.pem", "crl.d/crl.pem"),
    ] {
        fs::copy(certs.join(from), tls.join(to)).unwrap();
    }
    fs::set_permissions(
        tls.join("server-key.pem"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let after = check();
    assert_eq!(
        text(&after.stdout),
        format!(
            "{}: OK (1 listener(s), 1 backend(s))\n",
            config_path.display()
        )
    );
    // Nothing else, in particular no warning about the key's mode: only
    // the probe's word that no database runs behind it here (and, when the
    // test runs as root, that portcullis should not).
    let stderr = text(&after.stderr);
    assert!(
        stderr.lines().all(|l| l.contains("portcullis::probe")),
        "{stderr}"
    );
    assert!(
        stderr.contains("start-up probe: the backend could not be asked"),
        "{stderr}"
    );
    assert_eq!(after.status.code(), Some(0));
}

/// `systemd-analyze verify` on a copy of the unit whose binary paths point
/// into the unpacked root (verify insists that ExecStart= binaries exist),
/// and on a deliberately broken copy, to show that the check can fail.
fn verify_unit(dir: &Path, unit: &str, root: &Path) {
    let probe = Command::new("systemd-analyze").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        println!("NOTE: systemd-analyze not found: the unit file was not verified");
        return;
    }
    let verify_dir = dir.join("verify");
    fs::create_dir(&verify_dir).unwrap();
    let local = unit.replace(
        "/usr/bin/portcullis",
        root.join("usr/bin/portcullis").to_str().unwrap(),
    );
    let verify = |name: &str, body: &str| {
        let path = verify_dir.join(name);
        fs::write(&path, body).unwrap();
        run(Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--recursive-errors=no"])
            .arg(&path))
    };
    let good = verify("portcullis.service", &local);
    assert_eq!(
        text(&good.stderr),
        "",
        "systemd-analyze verify complained about the unit"
    );
    assert!(good.status.success());

    let broken = verify(
        "broken.service",
        &local.replace("ProtectSystem=strict", "ProtectSytem=strict"),
    );
    let complaint = text(&broken.stderr);
    assert!(
        complaint.contains("Unknown key") && complaint.contains("ProtectSytem"),
        "verify did not notice a misspelt key: {complaint}"
    );
}

#[test]
fn deb_script_refuses_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let missing = dir.path().join("no-such-binary");
    for (args, message) in [
        (
            vec![
                "--binary",
                missing.to_str().unwrap(),
                "--out",
                out_dir.to_str().unwrap(),
            ],
            format!("--binary {} is not an executable file", missing.display()),
        ),
        (
            vec![
                "--binary",
                BIN,
                "--compression",
                "lz4",
                "--out",
                out_dir.to_str().unwrap(),
            ],
            "--compression must be xz, gzip, zstd or none, not 'lz4'".to_string(),
        ),
        (
            vec!["--binary", BIN, "--out"],
            "--out needs a value".to_string(),
        ),
        (vec!["--bogus"], "unknown argument: --bogus".to_string()),
    ] {
        let out = run(deb_script(dir.path()).args(&args));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("scripts/deb: {message}")),
            "{args:?}: {stderr}"
        );
        assert!(!out_dir.exists(), "{args:?} created {}", out_dir.display());
    }
}
