//! The reads the decision core may ask for, for one vassal on one pass (`Lookups`):
//! what others recorded in the log since, the vassal file and its Emperor as they are
//! now, and what a process holds open. Each is read only when the core asks.

use std::collections::HashMap;
use std::path::PathBuf;

use tracing::{debug, warn};

use super::ledger::{Ledger, Topic};
use crate::episode::{Facts, Lookups, Proc};
use crate::forensics::{self, Baseline, Report};
use crate::inventory::{Inventory, Vassal};
use crate::policy::Past;
use crate::procs::{ProcId, Role};
use crate::sockets::PassTables;

pub(super) struct Reads<'a> {
    pub ledger: &'a mut Ledger,
    pub vassal: &'a Vassal,
    pub inv: &'a Inventory,
    pub baselines: &'a HashMap<ProcId, Baseline>,
    pub master: ProcId,
    pub top: usize,
    /// The socket tables this pass has read.
    pub tables: &'a mut PassTables,
}

impl Lookups for Reads<'_> {
    fn recorded_actions(&mut self) -> Vec<Past> {
        self.ledger.recorded_actions(&self.vassal.file.path)
    }

    fn facts(&mut self) -> Facts {
        let v = self.vassal;
        // Read the file again now: it may have changed since the last rescan.
        // With its includes: one deleted by a deploy makes it unloadable too.
        let fresh = crate::emperor::read_vassal(&v.file.path, &v.cwd);
        // The chain-reload file from this same read, judged with the owner as it is now.
        let topic = Topic::ChainFile(v.file.path.clone());
        let chain_file = match fresh.as_ref().map(|ini| chain_file(v, ini)) {
            Ok(Ok(path)) => {
                self.ledger.said.forget(&topic);
                path
            }
            Ok(Err(why)) => {
                // Said once, and again only when the reason changes: this is read on
                // every pass while the vassal is over its line.
                if self.ledger.said.is_news(topic, &why) {
                    warn!(vassal = %v.file.name, "touch-chain-reload not used: {why}");
                }
                None
            }
            Err(_) => None,
        };
        let ini_error = fresh.err().map(|e| e.to_string());
        Facts {
            ini_error,
            pending_change: v.pending_change,
            emperor_up: v
                .emperor
                .and_then(|p| self.inv.emperor(p))
                .is_some_and(crate::emperor::Emperor::is_running),
            chain_file,
        }
    }

    fn attribute(&mut self, p: &Proc) -> Option<Report> {
        let master = (p.role == Role::Worker).then_some(self.master.pid);
        let pid = p.id.pid;
        let baseline = self.baselines.get(&p.id);
        match forensics::report_in(pid, self.top, baseline, master, Some(self.tables)) {
            Ok(r) => Some(r),
            Err(e) => {
                debug!(vassal = %self.vassal.file.name, pid, "process gone before it could be read: {e}");
                None
            }
        }
    }
}

/// The vassal's `touch-chain-reload` file, when it declares one that is a regular file
/// its owner could touch (`Err`: why the one it declares is not used). uWSGI reads a
/// relative path from the vassal's working directory.
fn chain_file(v: &Vassal, ini: &crate::uwsgi_ini::VassalIni) -> Result<Option<PathBuf>, String> {
    let Some(value) = ini.get("touch-chain-reload") else {
        return Ok(None);
    };
    let path = v.cwd.join(value);
    let Some(owner) = crate::trust::authority(&v.file.path) else {
        return Ok(None);
    };
    crate::trust::named_file(owner, &path).map(|_| Some(path))
}
