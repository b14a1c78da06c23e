//! The Debian package's files that must follow the code: the manual pages and shell
//! completions made by `examples/gen_assets.rs` (the same code `scripts/build-deb`
//! runs), the shipped warden.ini and its manual page, and the copyright file.
//! Building the .deb itself and lintian are checked by `scripts/build-deb`.

use std::fs;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use vassal_warden::cli::Cli;
use vassal_warden::{POLICY_KEYS, WARDEN_KEYS};

use crate::bin;
use crate::gen_assets;

/// The repository's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The flags of `cmd` as they are written: `--long` and `-s`.
fn flags(cmd: &clap::Command) -> Vec<(Option<String>, Option<char>)> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional())
        .map(|a| (a.get_long().map(str::to_owned), a.get_short()))
        .collect()
}

/// The visible subcommands, with clap's help and version flags added as at run time.
fn subcommands() -> (clap::Command, Vec<clap::Command>) {
    let mut cmd = Cli::command();
    cmd.build();
    let subs = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .cloned()
        .collect();
    (cmd, subs)
}

/// The page of subcommand `name` says what its exit codes mean and shows it at work.
fn exit_codes_and_examples(name: &str, page: &str) {
    let (codes, examples) = gen_assets::usage_of(name);
    assert!(
        codes.len() >= 2 && !examples.is_empty(),
        "vassal-warden-{name}.1 has no exit codes or no example"
    );
    for (section, entries) in [("EXIT STATUS", codes), ("EXAMPLES", examples)] {
        let after = page
            .split_once(&format!(".SH \"{section}\""))
            .or_else(|| page.split_once(&format!(".SH {section}")))
            .unwrap_or_else(|| panic!("vassal-warden-{name}.1 lacks {section}:\n{page}"))
            .1;
        for (tag, _) in entries {
            assert!(after.contains(tag), "vassal-warden-{name}.1: {tag}");
        }
    }
    assert!(
        examples
            .iter()
            .all(|(e, _)| e.starts_with(&format!("vassal-warden {name}"))),
        "{name}: {examples:?}"
    );
}

#[test]
fn man_pages_and_completions_cover_every_subcommand_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    gen_assets::generate(dir.path()).unwrap();
    let man = |name: &str| {
        let path = dir.path().join("man").join(format!("{name}.1"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // roff escapes every hyphen.
        text.replace("\\-", "-").replace("\\*(Aq", "'")
    };
    let (cmd, subs) = subcommands();
    assert!(subs.len() >= 7, "{subs:?}");
    let top = man("vassal-warden");
    for (long, short) in flags(&cmd) {
        check_man_flag(&top, "vassal-warden", long.as_deref(), short);
    }
    let completions =
        |name: &str| fs::read_to_string(dir.path().join("completions").join(name)).unwrap();
    let (bash, zsh, fish) = (
        completions("vassal-warden.bash"),
        completions("_vassal-warden"),
        completions("vassal-warden.fish"),
    );
    for sub in &subs {
        let name = sub.get_name();
        assert!(
            top.contains(&format!("vassal-warden-{name}(1)")),
            "vassal-warden.1 lacks {name}"
        );
        let page = man(&format!("vassal-warden-{name}"));
        exit_codes_and_examples(name, &page);
        let bash_opts = bash_opts(&bash, name);
        let zsh_block = zsh_block(&zsh, name);
        let fish_lines = fish_lines(&fish, name);
        assert!(
            fish.contains(&format!("-a \"{name}\"")),
            "fish lacks {name}"
        );
        assert!(zsh.contains(&format!("'{name}:")), "zsh lacks {name}");
        for (long, short) in flags(sub) {
            check_man_flag(&page, name, long.as_deref(), short);
            for (shell, text, l, s) in [
                (
                    "bash",
                    &bash_opts,
                    long.as_ref().map(|l| format!(" --{l} ")),
                    short.map(|s| format!(" -{s} ")),
                ),
                (
                    "zsh",
                    &zsh_block,
                    long.as_ref().map(|l| format!("'--{l}")),
                    short.map(|s| format!("'-{s}")),
                ),
                (
                    "fish",
                    &fish_lines,
                    long.as_ref().map(|l| format!(" -l {l}")),
                    short.map(|s| format!(" -s {s} ")),
                ),
            ] {
                for want in l.iter().chain(&s) {
                    assert!(
                        text.contains(want.as_str()),
                        "{shell}: {name} lacks {want:?} in:\n{text}"
                    );
                }
            }
        }
        for arg in sub.get_arguments().filter(|a| a.is_positional()) {
            let value = arg.get_id().as_str().to_uppercase();
            assert!(
                page.contains(&value),
                "vassal-warden-{name}.1 lacks <{value}>"
            );
        }
    }
}

fn check_man_flag(page: &str, name: &str, long: Option<&str>, short: Option<char>) {
    if let Some(l) = long {
        assert!(
            page.contains(&format!("--{l}")),
            "{name}'s manual page lacks --{l}"
        );
    }
    if let Some(s) = short {
        assert!(
            page.contains(&format!("-{s}")),
            "{name}'s manual page lacks -{s}"
        );
    }
}

/// bash: the `opts="..."` line of the subcommand's case (padded with spaces).
fn bash_opts(bash: &str, name: &str) -> String {
    let mut lines = bash.lines();
    while let Some(l) = lines.next() {
        let l = l.trim();
        if l.ends_with(&format!("__subcmd__{name})")) && !l.contains("__help__") {
            let opts = lines.next().unwrap().trim();
            let opts = opts.strip_prefix("opts=\"").unwrap().trim_end_matches('"');
            return format!(" {opts} ");
        }
    }
    panic!("bash completion has no case for {name}");
}

/// zsh: from the line `(NAME)` to the end of its case.
fn zsh_block(zsh: &str, name: &str) -> String {
    let case = format!("({name})");
    let block: Vec<&str> = zsh
        .lines()
        .skip_while(|l| l.trim() != case)
        .take_while(|l| l.trim() != ";;")
        .collect();
    assert!(!block.is_empty(), "zsh completion has no case for {name}");
    block.join("\n")
}

/// fish: every line that completes within the subcommand.
fn fish_lines(fish: &str, name: &str) -> String {
    let lines: Vec<String> = fish
        .lines()
        .filter(|l| l.contains(&format!("using_subcommand {name}\"")))
        .map(|l| format!("{l} "))
        .collect();
    assert!(!lines.is_empty(), "fish completion has no lines for {name}");
    lines.join("\n")
}

/// The shipped warden.ini's commented-out settings (`;key = value`), by section.
fn shipped_settings() -> Vec<(String, String, String)> {
    let text = fs::read_to_string(root().join("packaging/warden.ini")).unwrap();
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(s) = line.strip_prefix('[') {
            s.trim_end_matches(']').clone_into(&mut section);
        } else if let Some(rest) = line.strip_prefix(';')
            && rest.starts_with(|c: char| !c.is_whitespace())
        {
            let (k, v) = rest
                .split_once('=')
                .unwrap_or_else(|| panic!("not a setting: {line}"));
            out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

#[test]
fn the_shipped_warden_ini_lists_every_key_and_uncommented_is_accepted() {
    let settings = shipped_settings();
    for (section, keys) in [("warden", WARDEN_KEYS), ("policy", POLICY_KEYS)] {
        let listed: Vec<&str> = settings
            .iter()
            .filter(|(s, ..)| s == section)
            .map(|(_, k, _)| k.as_str())
            .collect();
        assert_eq!(listed, keys, "[{section}] in packaging/warden.ini");
    }
    // The manual page of the file names every key too.
    let page = fs::read_to_string(root().join("packaging/vassal-warden.ini.5"))
        .unwrap()
        .replace("\\-", "-");
    for key in WARDEN_KEYS.iter().chain(POLICY_KEYS) {
        assert!(
            page.contains(&format!(".BI \"{key} = \"")),
            "vassal-warden.ini.5 lacks {key}"
        );
    }

    // Every setting uncommented: `check` accepts the file (exit 2 would be a config error).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("warden.ini");
    let mut lines = Vec::new();
    let mut section = "";
    for (s, k, v) in &settings {
        if s != section {
            lines.push(format!("[{s}]"));
            section = s;
        }
        lines.push(format!("{k} = {v}"));
    }
    let text = lines.join("\n");
    fs::write(&file, &text).unwrap();
    let out = Command::new(bin())
        .args(["check", "--json", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(2), "{text}\n{stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["config"], file.to_str().unwrap());
    assert_eq!(doc["audit_log"], "/var/log/vassal-warden/incidents.jsonl");
}

/// The copyright file (Debian's machine-readable format) carries LICENSE's text.
#[test]
fn the_debian_copyright_file_carries_the_license() {
    let license = fs::read_to_string(root().join("LICENSE")).unwrap();
    let copyright = fs::read_to_string(root().join("packaging/debian/copyright")).unwrap();
    assert!(copyright.starts_with(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    ));
    let (_, text) = copyright.split_once("\nLicense: Expat\n ").unwrap();
    let text = text.replace("\n .\n", "\n\n").replace("\n ", "\n");
    let body = license
        .split_once("\n\n")
        .unwrap()
        .1
        .split_once("\n\n")
        .unwrap()
        .1;
    assert_eq!(text.trim_end(), body.trim_end());
    let holder = license
        .lines()
        .find(|l| l.starts_with("Copyright (c) "))
        .unwrap();
    assert!(copyright.contains(&format!("Copyright: {}", &holder["Copyright (c) ".len()..])));
}
