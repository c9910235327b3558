//! Outputs: staged, placed together, undone together.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

/// One JSON file alone, through [`Outputs`].
fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut out = Outputs::default();
    out.json(path, true, value)?;
    out.commit()
}

/// One file alone, through [`Outputs`].
fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut out = Outputs::default();
    out.write_with(path, true, write)?;
    out.commit()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_file_is_replaced_whole_and_no_temporary_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.json");
    write_json(&path, &serde_json::json!({"x": 1})).unwrap();
    write_json(&path, &serde_json::json!({"x": 2})).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\n  \"x\": 2\n}\n"
    );
    assert_eq!(names(dir.path()), ["a.json"]);
}

#[test]
fn a_failed_write_leaves_the_target_and_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.txt");
    write_bytes(&path, b"old").unwrap();
    let e = write_with(&path, |tmp| {
        std::fs::write(tmp, b"half").unwrap();
        Err(FileError::Io("interrupted".into()))
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "interrupted");
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(names(dir.path()), ["a.txt"]);
}

#[test]
fn the_temporary_keeps_the_name_in_a_private_directory_beside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("curves.png");
    let mut seen = None;
    write_with(&target, |tmp| {
        assert_eq!(tmp.file_name().unwrap(), "curves.png");
        let private = tmp.parent().unwrap();
        assert_eq!(private.parent(), Some(dir.path()));
        let mode = std::fs::metadata(private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        seen = Some(private.to_path_buf());
        std::fs::write(tmp, b"png").unwrap();
        Ok(())
    })
    .unwrap();
    assert!(!seen.unwrap().exists());
    assert_eq!(names(dir.path()), ["curves.png"]);
}

#[test]
fn without_replace_a_file_that_appeared_meanwhile_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("o.txt");
    let mut out = Outputs::default();
    out.bytes(&target, false, b"new").unwrap();
    std::fs::write(&target, b"theirs").unwrap();
    let e = out.commit().unwrap_err();
    assert!(matches!(&e, FileError::Exists(p) if *p == target), "{e}");
    assert!(e.is_input());
    assert_eq!(std::fs::read(&target).unwrap(), b"theirs");
    assert_eq!(names(dir.path()), ["o.txt"]);
}

#[test]
fn a_failed_commit_undoes_the_outputs_already_placed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    std::fs::write(&b, b"old b").unwrap();
    std::fs::write(&c, b"theirs").unwrap();
    let mut out = Outputs::default();
    out.bytes(&a, false, b"new a").unwrap();
    out.bytes(&b, true, b"new b").unwrap();
    out.bytes(&c, false, b"new c").unwrap();
    assert!(out.commit().is_err());
    assert!(!a.exists());
    assert_eq!(std::fs::read(&b).unwrap(), b"old b");
    assert_eq!(std::fs::read(&c).unwrap(), b"theirs");
    assert_eq!(names(dir.path()), ["b", "c"]);
}

#[test]
fn an_output_that_is_an_input_is_refused_even_when_replacing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, b"input").unwrap();
    let link = dir.path().join("link");
    std::fs::hard_link(&input, &link).unwrap();
    let mut out = Outputs::new([&input]);
    assert!(out.check(&[&link], true).is_err());
    out.bytes(&link, true, b"x").unwrap();
    let e = out.commit().unwrap_err();
    assert!(e.to_string().contains("is the input"), "{e}");
    assert!(e.is_input());
    assert_eq!(std::fs::read(&input).unwrap(), b"input");
}

#[test]
fn directories_created_for_a_failed_operation_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("x/y");
    {
        let mut out = Outputs::default();
        out.create_dir_all(&deep).unwrap();
        out.bytes(&deep.join("f"), true, b"1").unwrap();
    }
    assert!(names(dir.path()).is_empty());
}

#[test]
fn names_reach_messages_escaped() {
    assert_eq!(escape("a\nb\u{1b}c\u{202e}"), "a\\nb\\u{1b}c\\u{202e}");
    assert_eq!(escape("plain/ü"), "plain/ü");
    assert_eq!(shown(Path::new("x\ty")), "x\\ty");
}
