//! Runs calls into `tokenizers` so that a panic inside the crate (it has `unwrap`s and index arithmetic on
//! untrusted `tokenizer.json` contents) becomes one error line naming the file instead of a crash. While a
//! guarded call runs on a thread, the default panic message is suppressed on that thread; panics elsewhere
//! are reported as usual.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

use crate::{Error, Result};

thread_local! {
    /// Nesting depth of guarded calls on this thread.
    static GUARDED: Cell<u32> = const { Cell::new(0) };
    /// Where the last guarded panic happened (`file:line`), for the error message.
    static LOCATION: Cell<Option<String>> = const { Cell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs, once, a panic hook that stays silent during guarded calls and defers to the previous hook
/// otherwise.
fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) > 0 {
                // `.../registry/src/<index>/tokenizers-0.23.2/src/x.rs` → `tokenizers-0.23.2/src/x.rs`.
                let at = info.location().map(|l| {
                    let file = l.file();
                    let short = file.rfind("/tokenizers-").map_or(file, |i| &file[i + 1..]);
                    format!("{short}:{}", l.line())
                });
                LOCATION.with(|c| c.set(at));
            } else {
                previous(info);
            }
        }));
    });
}

/// The text of a panic payload.
fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `f`; a panic becomes `Error::Tokenizer` naming `path` and saying what was being done.
pub(super) fn guarded<T>(path: &Path, doing: &str, f: impl FnOnce() -> T) -> Result<T> {
    install_hook();
    GUARDED.with(|g| g.set(g.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(g.get() - 1));
    result.map_err(|payload| {
        let msg = super::one_line(payload_message(payload.as_ref()));
        let at = LOCATION
            .with(Cell::take)
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        Error::tokenizer(
            path,
            format!("the tokenizers library panicked while {doing} (malformed file?): {msg}{at}"),
        )
    })
}
