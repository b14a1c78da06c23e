//! The ini reader agrees with uWSGI itself: `uwsgi --ini FILE --show-config` prints the
//! options uWSGI understood, for every file of `tests/data/ini-corpus/`. uWSGI runs in
//! the scratch directory the files are copied to, as a vassal runs in its Emperor's
//! directory, so relative includes resolve the same way; the files they include live in
//! `ini-corpus/includes/`, which is copied along but not compared on its own.

use std::path::Path;
use std::process::{Command, Stdio};

use vassal_warden::uwsgi_ini::VassalIni;

/// A directory that does not exist: uWSGI fails its `chdir` and exits right after printing
/// its configuration, before it binds any socket.
const STOP: &str = "/nonexistent/vassal-warden-oracle";

/// The options uWSGI printed with `--show-config`, less the ones the command line added.
fn uwsgi_view(path: &Path) -> Vec<(String, String)> {
    let out = Command::new("timeout")
        .args(["20", "uwsgi", "--ini"])
        .arg(path)
        .args(["--show-config", "--chdir", STOP])
        .current_dir(path.parent().unwrap())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let start = text
        .find(";uWSGI instance configuration")
        .unwrap_or_else(|| panic!("no configuration printed: {text}"));
    let body = &text[start..];
    let end = body.find(";end of configuration").unwrap();
    let mut opts: Vec<(String, String)> = body[..end]
        .lines()
        .filter(|l| !l.starts_with(';') && !l.starts_with('[') && !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once(" = ")
                .unwrap_or((l.trim_end_matches(" ="), ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    // The command line's own options; an `ini =` in a file is the file's.
    let cmdline_ini = opts.iter().position(|(k, _)| k == "ini").unwrap();
    opts.remove(cmdline_ini);
    opts.retain(|(k, v)| !(k == "show-config" || (k == "chdir" && v == STOP)));
    opts
}

#[test]
fn ini_reader_agrees_with_uwsgi_show_config_over_the_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ini-corpus");
    let work = tempfile::tempdir().unwrap();
    let includes = work.path().join("includes");
    std::fs::create_dir(&includes).unwrap();
    for e in std::fs::read_dir(corpus.join("includes")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), includes.join(e.file_name())).unwrap();
    }
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 7);
    for src in files {
        // Copied so that %d, %p and pidfiles point into a scratch directory.
        let path = work.path().join(src.file_name().unwrap());
        std::fs::copy(&src, &path).unwrap();
        let ours = VassalIni::read(&path).unwrap_or_else(|e| panic!("{e}"));
        let theirs = uwsgi_view(&path);
        assert_eq!(ours.options, theirs, "{} reads differently", src.display());
    }
}
