//! A capture's sites, shown the way Python shows a traceback: outermost call first, the
//! place that opened the leaked file or connection last, the app's own frames marked.

use std::io::{self, Write};

use crate::audit::{Capture, Frame};
use crate::capture::Origin;

/// Writes what `capture` says of the code that leaks, each line indented by `indent`.
pub(super) fn write(w: &mut dyn Write, capture: &Capture, indent: &str) -> io::Result<()> {
    if let Some(why) = &capture.unavailable {
        return writeln!(
            w,
            "{indent}code that leaks: not captured: {}",
            crate::text::one_line(why)
        );
    }
    if capture.pending && capture.sites.is_empty() {
        writeln!(
            w,
            "{indent}code that leaks: {}: no open seen yet; the capture goes on, on the \
             processes that replace the ones recycled or reloaded, and its sites follow \
             under this incident",
            crate::text::one_line(&capture.target),
        )?;
    } else {
        writeln!(
            w,
            "{indent}code that leaks: {} ({} opens seen in {:.0}s)",
            crate::text::one_line(&capture.target),
            capture.reports,
            capture.seconds
        )?;
        if capture.sites.is_empty() {
            writeln!(w, "{indent}  no site still holds what it opened")?;
        }
    }
    for site in &capture.sites {
        writeln!(
            w,
            "{indent}  {} still open of {} opened here (most recent call last):",
            site.open, site.opened
        )?;
        for f in site.frames.iter().rev() {
            let mark = if f.origin == Origin::App { "> " } else { "  " };
            writeln!(w, "{indent}  {mark}{}", frame(f))?;
        }
    }
    for n in &capture.notes {
        writeln!(w, "{indent}  note: {}", crate::text::one_line(n))?;
    }
    Ok(())
}

/// `File "/srv/app.py", line 12, in open_receipt` (the app's own, marked `>` by the
/// caller), with `[framework]` or `[stdlib]` after the others; a native frame's symbol.
fn frame(f: &Frame) -> String {
    // Names come from the app's memory and files: one line each, escaped.
    let file = crate::text::one_line(&f.file);
    let function = crate::text::one_line(&f.function);
    match f.origin {
        Origin::Native => format!("{function} in {file}  [native]"),
        origin => {
            let line = f.line.map_or_else(|| "?".into(), |l| l.to_string());
            let kind = match origin {
                Origin::App => String::new(),
                o => format!("  [{}]", o.as_str()),
            };
            format!("File \"{file}\", line {line}, in {function}{kind}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Site;

    fn py(file: &str, line: u32, function: &str, origin: Origin) -> Frame {
        Frame {
            file: file.into(),
            line: Some(line),
            function: function.into(),
            origin,
        }
    }

    #[test]
    fn sites_read_like_a_traceback() {
        let c = Capture {
            target: "/srv/shop/static/cat.jpg".into(),
            seconds: 12.0,
            reports: 30,
            sites: vec![Site {
                open: 30,
                opened: 30,
                frames: vec![
                    py("/srv/shop/shop.py", 20, "open_receipt", Origin::App),
                    py(
                        "/usr/lib/python3/dist-packages/bottle.py",
                        1993,
                        "wrapper",
                        Origin::Framework,
                    ),
                    py("/srv/shop/shop.py", 46, "receipt", Origin::App),
                ],
            }],
            unavailable: None,
            notes: vec!["PID 7: libpython3.12.so.1.0: only CPython 3.11's frames are read".into()],
            pending: false,
        };
        let mut out = Vec::new();
        write(&mut out, &c, "").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "code that leaks: /srv/shop/static/cat.jpg (30 opens seen in 12s)\n\
             \x20 30 still open of 30 opened here (most recent call last):\n\
             \x20 > File \"/srv/shop/shop.py\", line 46, in receipt\n\
             \x20   File \"/usr/lib/python3/dist-packages/bottle.py\", line 1993, in wrapper  [framework]\n\
             \x20 > File \"/srv/shop/shop.py\", line 20, in open_receipt\n\
             \x20 note: PID 7: libpython3.12.so.1.0: only CPython 3.11's frames are read\n"
        );
    }

    #[test]
    fn an_unavailable_capture_is_one_line() {
        let c = Capture {
            target: String::new(),
            seconds: 0.0,
            reports: 0,
            sites: Vec::new(),
            unavailable: Some("the kernel refused\nthe programs".into()),
            notes: Vec::new(),
            pending: false,
        };
        let mut out = Vec::new();
        write(&mut out, &c, "  ").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("  code that leaks: not captured: the kernel refused"));
    }

    #[test]
    fn a_capture_that_goes_on_says_its_sites_follow() {
        let c = Capture {
            target: "/srv/shop/static/cat.jpg".into(),
            seconds: 0.0,
            reports: 0,
            sites: Vec::new(),
            unavailable: None,
            notes: vec!["not armed before the incident: a leak faster than the passes".into()],
            pending: true,
        };
        let mut out = Vec::new();
        write(&mut out, &c, "").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("code that leaks: /srv/shop/static/cat.jpg: no open seen yet;"),
            "{text}"
        );
        assert!(
            text.contains("its sites follow under this incident"),
            "{text}"
        );
        assert!(
            text.contains("note: not armed before the incident"),
            "{text}"
        );
        assert!(!text.contains("opens seen"), "{text}");
    }
}
