//! Tests of the run directory: registry, stale siblings, exchange, long and non-UTF-8 names.

use super::*;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn create_and_commit() {
    let parent = tempfile::tempdir().unwrap();
    let target = parent.path().join("run1");
    let run = RunDir::create(&target, false).unwrap();
    assert!(run.path().starts_with(parent.path()));
    assert!(!target.exists());
    write_json(&run.file("meta.json"), &serde_json::json!({"a": 1})).unwrap();
    assert_eq!(run.commit().unwrap(), target);
    assert_eq!(entries(parent.path()), vec!["run1"]);
    let text = fs::read_to_string(target.join("meta.json")).unwrap();
    assert_eq!(text, "{\n  \"a\": 1\n}\n");
}

#[test]
fn drop_without_commit_leaves_nothing() {
    let parent = tempfile::tempdir().unwrap();
    {
        let run = RunDir::create(&parent.path().join("run"), false).unwrap();
        fs::create_dir(run.file("sub")).unwrap();
        fs::write(run.file("sub/x.bin"), b"data").unwrap();
        assert_eq!(entries(parent.path()).len(), 1);
    }
    assert!(entries(parent.path()).is_empty());
}

#[test]
fn existing_target_needs_overwrite() {
    let parent = tempfile::tempdir().unwrap();
    let target = parent.path().join("run");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("old.txt"), b"old").unwrap();
    let err = RunDir::create(&target, false).unwrap_err().to_string();
    assert!(err.contains(&target.display().to_string()), "{err}");

    let run = RunDir::create(&target, true).unwrap();
    fs::write(run.file("new.txt"), b"new").unwrap();
    run.commit().unwrap();
    assert_eq!(entries(&target), vec!["new.txt"]);
    assert_eq!(entries(parent.path()), vec!["run"]);
}

#[test]
fn registry_lists_live_temp_dirs() {
    let parent = tempfile::tempdir().unwrap();
    let run = RunDir::create(&parent.path().join("run"), false).unwrap();
    let tmp = run.path().to_path_buf();
    assert!(live_temp_dirs().contains(&tmp));
    run.commit().unwrap();
    assert!(!live_temp_dirs().contains(&tmp));
    let run = RunDir::create(&parent.path().join("other"), false).unwrap();
    let tmp = run.path().to_path_buf();
    assert!(live_temp_dirs().contains(&tmp));
    drop(run);
    assert!(!live_temp_dirs().contains(&tmp));
    assert!(!tmp.exists());
}

#[test]
fn sibling_names_parse() {
    let ok = |s: &str| {
        stale::parse(OsStr::new(s))
            .map(|p| (p.stem.to_vec(), p.tag, p.pid, p.host.map(<[u8]>::to_vec)))
    };
    assert_eq!(
        ok(".run.tmp-12-345"),
        Some((b"run".to_vec(), "tmp", 12, None))
    );
    assert_eq!(ok(".a.b.old-1-2"), Some((b"a.b".to_vec(), "old", 1, None)));
    assert_eq!(
        ok(".a-b.tmp-7@0123abcd-9"),
        Some((b"a-b".to_vec(), "tmp", 7, Some(b"0123abcd".to_vec())))
    );
    for long in ["x".repeat(250), "é".repeat(120)] {
        let stem = sibling_stem(OsStr::new(&long));
        assert!(stale::is_shortened(stem.as_encoded_bytes()), "{stem:?}");
    }
    assert!(!stale::is_shortened(b"run~0123456789abcdef"));
    for bad in [
        "run.tmp-12-345",
        "..tmp-1-2",
        ".run.tmp-x-345",
        ".run.tmp-12-",
        ".run.new-12-345",
        ".run.tmp-12",
        ".run.tmp-99999999999-1",
        ".run.tmp-12@0123abc-1",
        ".run.tmp-12@0123ABCD-1",
        ".run.tmp-@0123abcd-1",
    ] {
        assert_eq!(ok(bad), None, "{bad}");
    }
}

/// A PID above Linux's pid_max (2^22), so never a live process.
#[cfg(target_os = "linux")]
const DEAD: u32 = 999_999_999;

#[cfg(target_os = "linux")]
#[test]
fn stale_siblings_of_dead_processes_are_removed() {
    let parent = tempfile::tempdir().unwrap();
    let p = parent.path();
    let me = std::process::id();
    let dirs = [
        format!(".x.tmp-{DEAD}-1"),     // dead: removed
        format!(".y.old-{DEAD}-2"),     // dead, y exists: removed
        format!(".x.tmp-{me}-3"),       // this process: kept
        format!(".x.tmp-{DEAD}-"),      // not the pattern: kept
        format!("x.tmp-{DEAD}-4"),      // not hidden: kept
        format!(".x.tmp-{DEAD}-5.bak"), // not the pattern: kept
    ];
    for d in &dirs {
        fs::create_dir(p.join(d)).unwrap();
        fs::write(p.join(d).join("f"), b"data").unwrap();
    }
    fs::create_dir(p.join("y")).unwrap();
    fs::write(p.join(format!(".z.tmp-{DEAD}-6")), b"a file").unwrap(); // dead: removed
    let run = RunDir::create(&p.join("run"), false).unwrap();
    let tmp = run
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut want = vec![
        format!(".x.tmp-{DEAD}-"),
        format!(".x.tmp-{DEAD}-5.bak"),
        format!(".x.tmp-{me}-3"),
        tmp,
        format!("x.tmp-{DEAD}-4"),
        "y".to_string(),
    ];
    want.sort();
    assert_eq!(entries(p), want);
}

#[test]
fn own_sibling_names_carry_this_host() {
    let parent = tempfile::tempdir().unwrap();
    let run = RunDir::create(&parent.path().join("run"), false).unwrap();
    let name = run.path().file_name().unwrap().to_owned();
    let parsed = stale::parse(&name).unwrap();
    assert_eq!(parsed.pid, std::process::id());
    assert_eq!(parsed.host, Some(crate::run_dir::host_tag().as_bytes()));
    assert!(!parsed.is_abandoned());
}

/// A host tag that is not this machine's.
#[cfg(target_os = "linux")]
fn other_host() -> &'static str {
    if crate::run_dir::host_tag() == "00000000" {
        "00000001"
    } else {
        "00000000"
    }
}

#[cfg(target_os = "linux")]
#[test]
fn another_hosts_siblings_are_left_by_create_and_removed_for_their_owner() {
    let parent = tempfile::tempdir().unwrap();
    let p = parent.path();
    let (me, here, there) = (std::process::id(), crate::run_dir::host_tag(), other_host());
    let dirs = [
        format!(".a.tmp-{DEAD}@{there}-1"), // another host's: kept by create, removed for its owner
        format!(".a.tmp-{me}@{here}-2"),    // alive here: kept by both
        format!(".b.tmp-{DEAD}@{there}-3"), // another host's, not owned: kept by both
        format!(".a.old-{DEAD}@{there}-4"), // not a temp run: kept by both
    ];
    for d in &dirs {
        fs::create_dir(p.join(d)).unwrap();
    }
    let dead_here = format!(".c.tmp-{DEAD}@{here}-5"); // dead here: removed by create
    fs::create_dir(p.join(&dead_here)).unwrap();
    let run = RunDir::create(&p.join("run"), false).unwrap();
    let tmp = run
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut want: Vec<String> = dirs.to_vec();
    want.push(tmp.clone());
    want.sort();
    assert_eq!(entries(p), want);
    let notes = crate::run_dir::remove_partial_runs(p, &|stem| stem == b"a" || stem == b"run");
    assert_eq!(notes.len(), 1, "{notes:?}");
    want.retain(|d| d != &dirs[0]);
    assert_eq!(entries(p), want);
    run.commit().unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn stranded_old_run_is_restored() {
    let parent = tempfile::tempdir().unwrap();
    let p = parent.path();
    // A two-step overwrite killed between its renames: the new run complete in .tmp, the old in .old.
    let old = p.join(format!(".run.old-{DEAD}-7"));
    fs::create_dir(&old).unwrap();
    fs::write(old.join("old.txt"), b"old").unwrap();
    fs::create_dir(p.join(format!(".run.tmp-{DEAD}-8"))).unwrap();
    let err = RunDir::create(&p.join("run"), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(entries(p), vec!["run"]);
    assert_eq!(entries(&p.join("run")), vec!["old.txt"]);
}

#[cfg(target_os = "linux")]
#[test]
fn exchange_swaps_two_directories() {
    let parent = tempfile::tempdir().unwrap();
    let (a, b) = (parent.path().join("a"), parent.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::write(a.join("in_a"), b"").unwrap();
    fs::create_dir(&b).unwrap();
    fs::write(b.join("in_b"), b"").unwrap();
    assert!(
        exchange_paths(&a, &b).unwrap(),
        "RENAME_EXCHANGE unsupported here"
    );
    assert_eq!(entries(&a), vec!["in_b"]);
    assert_eq!(entries(&b), vec!["in_a"]);
    let missing = parent.path().join("missing");
    assert!(exchange_paths(&a, &missing).is_err());
}

#[test]
fn overwrite_with_and_without_exchange() {
    for exchange in [true, false] {
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("run");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old.txt"), b"old").unwrap();
        let run = RunDir::create(&target, true).unwrap();
        let tmp = run.path().to_path_buf();
        fs::write(run.file("new.txt"), b"new").unwrap();
        assert_eq!(run.commit_with(exchange).unwrap(), target);
        assert_eq!(entries(&target), vec!["new.txt"], "exchange: {exchange}");
        assert_eq!(entries(parent.path()), vec!["run"], "exchange: {exchange}");
        assert!(
            !live_temp_dirs()
                .iter()
                .any(|p| p.starts_with(parent.path()))
        );
        assert!(!tmp.exists());
    }
}

#[test]
fn long_names_get_short_siblings() {
    let parent = tempfile::tempdir().unwrap();
    let long = "r".repeat(250);
    let target = parent.path().join(&long);
    let run = RunDir::create(&target, false).unwrap();
    let tmp_name = run.path().file_name().unwrap().len();
    assert!(tmp_name <= NAME_MAX, "{tmp_name}");
    let stem = sibling_stem(OsStr::new(&long));
    assert!(
        run.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!(".{}.tmp-", stem.to_string_lossy()))
    );
    assert_ne!(stem, sibling_stem(OsStr::new(&"r".repeat(251))));
    assert_eq!(sibling_stem(OsStr::new("run")), OsStr::new("run"));
    run.commit().unwrap();
    assert_eq!(entries(parent.path()), vec![long.clone()]);
    // Overwrite: the .old sibling (two-step) is shortened too.
    let run = RunDir::create(&target, true).unwrap();
    run.commit_with(false).unwrap();
    assert_eq!(entries(parent.path()), vec![long.clone()]);
}

#[cfg(target_os = "linux")]
#[test]
fn stale_long_name_siblings() {
    let parent = tempfile::tempdir().unwrap();
    let p = parent.path();
    let long = "q".repeat(240);
    let stem = sibling_stem(OsStr::new(&long)).into_string().unwrap();
    fs::create_dir(p.join(&long)).unwrap();
    fs::create_dir(p.join(format!(".{stem}.old-{DEAD}-1"))).unwrap(); // its run exists: removed
    fs::create_dir(p.join(format!(".{stem}.tmp-{DEAD}-2"))).unwrap(); // removed
    let other = sibling_stem(OsStr::new(&"s".repeat(240)))
        .into_string()
        .unwrap();
    let stranded = format!(".{other}.old-{DEAD}-3"); // full name unknown: left alone
    fs::create_dir(p.join(&stranded)).unwrap();
    drop(RunDir::create(&p.join("run"), false).unwrap());
    let mut want = vec![long, stranded];
    want.sort();
    assert_eq!(entries(p), want);
}

#[cfg(unix)]
#[test]
fn non_utf8_names() {
    use std::os::unix::ffi::OsStrExt;
    let parent = tempfile::tempdir().unwrap();
    let name = OsStr::from_bytes(b"run-\xff-\xfe");
    let target = parent.path().join(name);
    let run = RunDir::create(&target, false).unwrap();
    write_json(&run.file("meta.json"), &1).unwrap();
    run.commit().unwrap();
    assert!(target.join("meta.json").is_file());
    let run = RunDir::create(&target, true).unwrap();
    run.commit().unwrap();
    assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 1);
}

#[test]
fn unusable_parents_error() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("nope").join("run");
    let err = RunDir::create(&missing, false).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let file = parent.path().join("plain");
    fs::write(&file, b"x").unwrap();
    let under_file = file.join("run");
    let err = RunDir::create(&under_file, true).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
    assert_eq!(entries(parent.path()), vec!["plain"]);
}
