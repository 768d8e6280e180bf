//! `--security-opt` as users type it: a profile isolate cannot use is
//! refused before anything runs, with exit code 125 and a message that
//! names the file and the problem. Needs neither root nor a rootfs.

use std::process::Command;

fn isolate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_isolate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn with_profile(json: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.json");
    std::fs::write(&path, json).unwrap();
    let opt = format!("seccomp={}", path.display());
    let (code, err) = isolate(&["--mode", "container", "--security-opt", &opt, "/bin/true"]);
    (code, err, path.display().to_string())
}

#[test]
fn malformed_json_exits_125_naming_the_file() {
    let (code, err, path) = with_profile(r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": ["#);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("invalid security-opt"), "{err}");
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn unsupported_action_and_op_exit_125_naming_them() {
    let (code, err, _) = with_profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}]}"#,
    );
    assert_eq!(code, 125, "{err}");
    assert!(
        err.contains("syscalls[0] (mount)") && err.contains("SCMP_ACT_NOTIFY"),
        "{err}"
    );
    let (code, err, _) = with_profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ERRNO",
              "args": [{"index": 1, "value": 21522, "op": "SCMP_CMP_REGEX"}]}]}"#,
    );
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("SCMP_CMP_REGEX"), "{err}");
}

#[test]
fn missing_profile_and_unknown_options_exit_125() {
    let (code, err) = isolate(&[
        "--mode",
        "container",
        "--security-opt",
        "seccomp=/nonexistent/profile.json",
        "/bin/true",
    ]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("/nonexistent/profile.json"), "{err}");
    let (code, err) = isolate(&[
        "--mode",
        "container",
        "--security-opt",
        "apparmor=unconfined",
        "/bin/true",
    ]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("apparmor=unconfined"), "{err}");
}
