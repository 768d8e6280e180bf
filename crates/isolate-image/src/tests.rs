use std::os::unix::fs::{symlink, PermissionsExt};
use std::time::SystemTime;

use isolate_core::protocol::GuestRoot;

use super::*;
use crate::cpio::read::parse;
use crate::cpio::{S_IFDIR, S_IFLNK, S_IFREG};

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("etc/hostname"), b"isolate\n").unwrap();
        symlink("tool", root.join("bin/alias")).unwrap();
        // A stale /init of the rootfs must be replaced by ours.
        fs::write(root.join("init"), b"not the init").unwrap();
        fs::write(tmp.path().join("isolate-init"), b"\x7fELF init v1").unwrap();
        Fixture { tmp }
    }
    fn rootfs(&self) -> PathBuf {
        self.tmp.path().join("rootfs")
    }
    fn init(&self) -> PathBuf {
        self.tmp.path().join("isolate-init")
    }
    fn cache(&self) -> Cache {
        Cache::at(self.tmp.path().join("images"))
    }
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

fn spec() -> GuestSpec {
    GuestSpec {
        argv: vec!["echo".into(), "hi".into()],
        env: vec![("PATH".into(), "/bin:/usr/bin".into())],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        hostname: "box".into(),
        root: GuestRoot::Initramfs,
        read_only: false,
        volumes: vec![],
        memory_limit: Some(128 << 20),
        pids_limit: Some(64),
        loopback: true,
        stdin: false,
        privileges: None,
    }
}

#[test]
fn root_initramfs_holds_the_tree_and_the_init() {
    let f = Fixture::new();
    let path = f.cache().root_initramfs(&f.rootfs(), &f.init()).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len() % 4, 0);
    let entries = parse(&bytes);
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bin",
            "bin/alias",
            "bin/tool",
            "etc",
            "etc/hostname",
            "dev",
            "dev/console",
            "dev/null",
            "isolate",
            "init"
        ]
    );
    let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
    assert_eq!(get("bin/tool").mode, S_IFREG | 0o755);
    assert_eq!(get("bin/tool").data, b"#!/bin/sh\necho tool\n");
    assert_eq!(get("bin/alias").mode, S_IFLNK | 0o777);
    assert_eq!(get("bin/alias").data, b"tool");
    assert_eq!(get("isolate").mode & 0o170000, S_IFDIR);
    assert_eq!(get("init").mode, S_IFREG | 0o755);
    assert_eq!(get("init").data, b"\x7fELF init v1");
    assert_eq!(get("dev/console").mode, crate::cpio::S_IFCHR | 0o600);
    assert_eq!(get("dev/console").rdev, (5, 1));
    assert!(entries.iter().all(|e| e.mtime == 0));
}

#[test]
fn second_call_is_a_cache_hit_without_rebuilding() {
    let f = Fixture::new();
    let c = f.cache();
    let first = c.root_initramfs(&f.rootfs(), &f.init()).unwrap();
    let before = mtime(&first);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = c.root_initramfs(&f.rootfs(), &f.init()).unwrap();
    assert_eq!(first, second);
    assert_eq!(before, mtime(&second), "image was rewritten");
    // No temporary files left behind.
    let names: Vec<_> = fs::read_dir(c.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn changed_file_or_init_is_a_cache_miss() {
    let f = Fixture::new();
    let c = f.cache();
    let first = c.root_initramfs(&f.rootfs(), &f.init()).unwrap();
    fs::write(f.rootfs().join("etc/hostname"), b"other-host\n").unwrap();
    let second = c.root_initramfs(&f.rootfs(), &f.init()).unwrap();
    assert_ne!(first, second);
    let e = parse(&fs::read(&second).unwrap());
    let host = e.iter().find(|e| e.name == "etc/hostname").unwrap();
    assert_eq!(host.data, b"other-host\n");

    // A different size: two writes within one clock tick can share a ctime.
    fs::write(f.init(), b"\x7fELF init v2, longer").unwrap();
    let third = c.root_initramfs(&f.rootfs(), &f.init()).unwrap();
    assert_ne!(second, third);
}

#[test]
fn unreadable_rootfs_is_an_error_naming_it_and_leaves_no_temp_file() {
    let f = Fixture::new();
    let missing = f.tmp.path().join("no-such-rootfs");
    let err = f.cache().root_initramfs(&missing, &f.init()).unwrap_err();
    assert!(err.to_string().contains("no-such-rootfs"), "{err}");
    let missing_init = f.tmp.path().join("no-init");
    let err = f
        .cache()
        .root_initramfs(&f.rootfs(), &missing_init)
        .unwrap_err();
    assert!(err.to_string().contains("no-init"), "{err}");
    let left = fs::read_dir(f.cache().dir())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0);
}

#[test]
fn init_only_initramfs_holds_only_the_init() {
    let f = Fixture::new();
    let p = f.cache().init_only_initramfs(&f.init()).unwrap();
    let names: Vec<_> = parse(&fs::read(&p).unwrap())
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["dev", "dev/console", "dev/null", "isolate", "init"]);
    assert_eq!(f.cache().init_only_initramfs(&f.init()).unwrap(), p);
}

#[test]
fn spec_archive_holds_the_spec_json_and_concatenates() {
    let s = spec();
    let archive = spec_archive(&s);
    assert_eq!(archive.len() % 4, 0);
    let e = parse(&archive);
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].name, "isolate");
    assert_eq!(e[1].name, "isolate/spec.json");
    assert_eq!(e[1].mode, S_IFREG | 0o400);
    let back: GuestSpec = serde_json::from_slice(&e[1].data).unwrap();
    assert_eq!(back, s);

    // Root archive + spec archive: one stream, both sets of entries.
    let f = Fixture::new();
    let mut initrd = fs::read(f.cache().root_initramfs(&f.rootfs(), &f.init()).unwrap()).unwrap();
    initrd.extend(&archive);
    let names: Vec<_> = parse(&initrd).into_iter().map(|e| e.name).collect();
    assert_eq!(names.last().unwrap(), "isolate/spec.json");
    assert!(names.contains(&"init".to_string()));
}

#[test]
fn concatenated_initrd_extracts_with_gnu_cpio() {
    let Ok(_) = Command::new("cpio").arg("--version").output() else {
        eprintln!("SKIP concatenated_initrd_extracts_with_gnu_cpio: cpio(1) not installed");
        return;
    };
    if isolate_core::sys::rootless() {
        eprintln!(
            "SKIP concatenated_initrd_extracts_with_gnu_cpio: needs root to mknod /dev/console"
        );
        return;
    }
    let f = Fixture::new();
    let root = fs::read(f.cache().root_initramfs(&f.rootfs(), &f.init()).unwrap()).unwrap();
    let spec = spec_archive(&spec());
    let out = f.tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    // GNU cpio reads one archive per invocation: feed each part in turn,
    // as the kernel walks the concatenation.
    for part in [&root, &spec] {
        let mut child = Command::new("cpio")
            .args(["-id", "--quiet", "--no-absolute-filenames"])
            .current_dir(&out)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(part).unwrap();
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(fs::read(out.join("init")).unwrap(), b"\x7fELF init v1");
    assert_eq!(
        fs::read_link(out.join("bin/alias")).unwrap(),
        Path::new("tool")
    );
    let json = fs::read(out.join("isolate/spec.json")).unwrap();
    assert_eq!(
        serde_json::from_slice::<GuestSpec>(&json).unwrap(),
        self::spec()
    );
}

#[test]
fn choose_uses_the_content_threshold() {
    let f = Fixture::new();
    assert_eq!(choose(&f.rootfs()).unwrap(), RootKind::Initramfs);
    let big = File::create(f.rootfs().join("big")).unwrap();
    big.set_len(INITRAMFS_MAX_BYTES + 1).unwrap();
    assert_eq!(choose(&f.rootfs()).unwrap(), RootKind::Block);
}

#[test]
fn block_image_is_built_once_and_mountable_type_is_named() {
    if find_tool("mkfs.erofs").is_none() && find_tool("mkfs.ext4").is_none() {
        eprintln!("SKIP block_image_is_built_once_and_mountable_type_is_named: no mkfs.erofs or mkfs.ext4");
        return;
    }
    let f = Fixture::new();
    let c = f.cache();
    let img = c.block_image(&f.rootfs()).unwrap();
    assert!(["erofs", "ext4"].contains(&img.fstype));
    let bytes = fs::read(&img.path).unwrap();
    match img.fstype {
        // erofs superblock magic 0xE0F5E1E2 at offset 1024.
        "erofs" => assert_eq!(&bytes[1024..1028], &0xE0F5_E1E2u32.to_le_bytes()),
        // ext4 superblock magic 0xEF53 at offset 1024 + 0x38.
        _ => assert_eq!(&bytes[1024 + 0x38..1024 + 0x3a], &0xEF53u16.to_le_bytes()),
    }
    let before = mtime(&img.path);
    assert_eq!(c.block_image(&f.rootfs()).unwrap(), img);
    assert_eq!(before, mtime(&img.path));
    fs::write(f.rootfs().join("etc/new"), b"x").unwrap();
    assert_ne!(c.block_image(&f.rootfs()).unwrap().path, img.path);
}

#[test]
fn ext4_fallback_builds_an_image_holding_the_tree() {
    let (Some(mkfs), Some(debugfs)) = (find_tool("mkfs.ext4"), find_tool("debugfs")) else {
        eprintln!("SKIP ext4_fallback_builds_an_image_holding_the_tree: e2fsprogs not installed");
        return;
    };
    let f = Fixture::new();
    let img = f
        .cache()
        .block_image_with(&f.rootfs(), Some((mkfs, "ext4")))
        .unwrap();
    assert_eq!(img.fstype, "ext4");
    assert!(img.path.to_string_lossy().ends_with(".ext4"));
    let out = Command::new(debugfs)
        .args(["-R", "cat /bin/tool"])
        .arg(&img.path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "#!/bin/sh\necho tool\n"
    );
}

#[test]
fn block_image_without_any_mkfs_names_the_package_to_install() {
    let f = Fixture::new();
    let err = f.cache().block_image_with(&f.rootfs(), None).unwrap_err();
    assert!(err.to_string().contains("erofs-utils"), "{err}");
}
