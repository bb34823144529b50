//! Upgrade safety: a data folder written by an earlier radguard (a committed fixture, format 1,
//! from before the folder carried its format) is opened and keeps working -- the vault knows
//! what it holds, the ledger and the audit chain grow and still verify; a folder of a newer
//! format is refused untouched with exit status 3.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn unpack_fixture(into: &Path) {
    let tar = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-format-1.tar.gz");
    let st = Command::new("tar")
        .arg("xzf")
        .arg(&tar)
        .arg("-C")
        .arg(into)
        .status()
        .expect("tar");
    assert!(st.success(), "unpacking {}", tar.display());
}

fn radguard(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(Radguard::exe())
        .args(args)
        .output()
        .expect("run radguard")
}

#[test]
fn a_format_1_folder_is_opened_and_keeps_working() {
    let tmp = tmp_dir("data-upgrade");
    unpack_fixture(tmp.path());
    let data = tmp.path().join("data");
    let old_instance = tmp.path().join("fixture-ct.dcm");
    assert!(
        !data.join("radguard-data.toml").exists(),
        "the fixture predates the file"
    );
    let objects_before = files_under(&data, ".dcm").len();
    assert_eq!(objects_before, 1);

    let scp = StoreScp::start("ARCHIVE");
    let cfg = Config::new()
        .peer("lab", &["RG_SCU"], &["127.0.0.1/32"], &["echo", "store"], &["*"], &[])
        .vault_route("VAULT")
        .toml()
        + &format!(
            "\n[[route]]\ncalled_ae = \"ORIGIN\"\nupstream = \"127.0.0.1:{}\"\nupstream_ae = \"ARCHIVE\"\norigin = true\n",
            scp.port
        );
    let rg = Radguard::start(&cfg, &data);
    // The vault's old index: the instance it holds is an identical duplicate (success, nothing
    // new written).
    storescu(
        rg.port(),
        "RG_SCU",
        "VAULT",
        std::slice::from_ref(&old_instance),
    )
    .assert_success("storescu of the instance the old vault holds");
    assert_eq!(files_under(&data, ".dcm").len(), 1, "no second copy");
    // New entries after the old ones: a new instance into the vault, one through the origin
    // route (ledger).
    let new = test_data().mr_files();
    let new = &new[..1];
    storescu(rg.port(), "RG_SCU", "VAULT", new).assert_success("storescu -> vault");
    storescu(rg.port(), "RG_SCU", "ORIGIN", new).assert_success("storescu -> origin");
    assert_eq!(files_under(&data, ".dcm").len(), 2);
    assert!(rg.stop().success());

    let stamp = std::fs::read_to_string(data.join("radguard-data.toml")).expect("stamped");
    assert!(stamp.contains("format = 2"), "{stamp}");
    // Format 2: the vault's index log, written for the old row when the vault was opened and
    // for the new one as it was stored; the upgraded vault checks clean.
    let out = radguard(&[
        "vault".as_ref(),
        "check".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "vault check:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(data.join("vault/index-log/current.log")).expect("log");
    assert_eq!(log.lines().count(), 2, "{log}");

    // The audit chain: the old records and the new ones, signatures checked with the old key.
    let store = data.join("audit.sqlite");
    let out = radguard(&[
        "audit".as_ref(),
        "verify".as_ref(),
        "--store".as_ref(),
        store.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "audit verify:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The ledger: the instance logged by the old radguard and the one logged now.
    let ledger = data.join("ledger");
    for f in [old_instance.as_path(), new[0].as_path()] {
        let out = radguard(&[
            "verify".as_ref(),
            "--ledger".as_ref(),
            ledger.as_os_str(),
            f.as_os_str(),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("unchanged"),
            "verify {}: {:?}\n{text}{}",
            f.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_folder_of_a_newer_format_is_refused_untouched() {
    let tmp = tmp_dir("data-newer");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("radguard-data.toml"), "format = 99\n").expect("write");
    let cfg = tmp.path().join("radguard.toml");
    std::fs::write(
        &cfg,
        Config::new()
            .peer("lab", &["RG_SCU"], &["127.0.0.1/32"], &["echo"], &[], &[])
            .vault_route("VAULT")
            .toml(),
    )
    .expect("config");
    let mut child = Command::new(Radguard::exe())
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .arg("--data")
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // It exits by itself; bounded in case it does not (then the assertion below fails).
    let done = wait_until(Duration::from_secs(30), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !done {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("written by a newer radguard (data format 99"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&data)
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("radguard-data.toml")],
        "nothing opened"
    );
}

#[test]
fn the_commands_that_write_into_or_read_the_folder_refuse_a_newer_one_too() {
    let tmp = tmp_dir("data-newer-offline");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("radguard-data.toml"), "format = 99\n").expect("write");
    for args in [
        &[
            "block",
            "add",
            "--address",
            "192.0.2.7",
            "--for",
            "1h",
            "--reason",
            "test",
        ][..],
        &["block", "list"][..],
        &["queue", "list"][..],
        &["queue", "retry"][..],
        &["vault", "check"][..],
        &["vault", "verify"][..],
        &["vault", "replay", "--to", "127.0.0.1:9", "--called-ae", "X"][..],
    ] {
        let out = Command::new(Radguard::exe())
            .args(args)
            .arg("--data")
            .arg(&data)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains("written by a newer radguard (data format 99"),
            "{args:?}: {err}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(&data)
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("radguard-data.toml")],
        "nothing written"
    );
}
