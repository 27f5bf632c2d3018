//! Log setup: `tracing` events to stderr (journald picks them up under systemd) as human text
//! or one JSON object per line, filtered by `RUST_LOG` when set, else by `log.level` from the
//! config. One function for the daemon to call once at start-up.
//!
//! Colour is for a person at a terminal only: under systemd, in a pipe or a file the ANSI escapes
//! would land in the journal as `\x1b[2m…` noise, so text output is coloured only when the log
//! sink (stderr) is a terminal and `NO_COLOR` (<https://no-color.org>) is unset or empty. JSON is
//! never coloured, so every line stays one parseable object.

use tracing_subscriber::EnvFilter;
#[cfg(test)]
use tracing_subscriber::fmt::MakeWriter;

/// How the agent logs (the daemon fills it from the `[log]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogConfig {
    /// One JSON object per line; else human text.
    pub json: bool,
    /// A `tracing` filter directive (`info`, `lqagent=debug,warn`); `RUST_LOG` overrides it.
    pub level: String,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("RUST_LOG: not a tracing filter ({0})")]
    BadEnvFilter(String),
    #[error("log.level: not a tracing filter ({0})")]
    BadLevel(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadySet,
    #[error("log filter reload failed: {0}")]
    Reload(String),
}

/// The filter: `RUST_LOG` when set and non-empty, else `level`.
pub(crate) fn filter(level: &str, rust_log: Option<&str>) -> Result<EnvFilter, LogError> {
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(env) => EnvFilter::builder()
            .parse(env)
            .map_err(|e| LogError::BadEnvFilter(e.to_string())),
        None => EnvFilter::builder()
            .parse(level)
            .map_err(|e| LogError::BadLevel(e.to_string())),
    }
}

/// Whether text output may carry ANSI colour: only when the sink is a terminal and `NO_COLOR`
/// (its value as read from the environment) is unset or empty.
pub(crate) fn colour(sink_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    sink_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// [`colour`] for the daemon's real sink, stderr, and the real environment.
fn stderr_colour() -> bool {
    use std::io::IsTerminal;
    colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// A subscriber writing to `writer` in the configured format; `ansi` allows colour in text
/// output (see [`colour`]; JSON never has any). The unit tests' stand-in for the format set-up
/// of [`init_reloadable`], which writes to stderr.
#[cfg(test)]
pub(crate) fn subscriber<W>(
    section: &LogConfig,
    rust_log: Option<&str>,
    writer: W,
    ansi: bool,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, LogError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter(&section.level, rust_log)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true)
        .with_ansi(ansi && !section.json);
    Ok(if section.json {
        Box::new(builder.json().flatten_event(true).finish())
    } else {
        Box::new(builder.finish())
    })
}

/// Swaps the filter of the installed subscriber.
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Changes the running filter on a configuration reload.
pub(crate) struct LogReload {
    /// `None` when `RUST_LOG` set the filter: it wins over `log.level`, also on reload.
    set: Option<SetFilter>,
}

impl std::fmt::Debug for LogReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReload")
            .field("pinned_by_rust_log", &self.set.is_none())
            .finish()
    }
}

impl LogReload {
    /// Apply a new `log.level`; Ok(false) when `RUST_LOG` pins the filter (nothing changed).
    pub(crate) fn set_level(&self, level: &str) -> Result<bool, LogError> {
        let Some(set) = &self.set else {
            return Ok(false);
        };
        let f = filter(level, None)?;
        set(f).map_err(LogError::Reload)?;
        Ok(true)
    }
}

/// Install the global subscriber (stderr), keeping a handle to change the level later (the
/// daemon's SIGHUP). Call once, before anything logs.
pub(crate) fn init_reloadable(section: &LogConfig) -> Result<LogReload, LogError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let pinned = rust_log.as_deref().is_some_and(|s| !s.trim().is_empty());
    let f = filter(&section.level, rust_log.as_deref())?;
    let base = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_ansi(stderr_colour() && !section.json);
    let set: SetFilter = if section.json {
        let b = base
            .json()
            .flatten_event(true)
            .with_env_filter(f)
            .with_filter_reloading();
        let h = b.reload_handle();
        tracing::subscriber::set_global_default(b.finish()).map_err(|_| LogError::AlreadySet)?;
        Box::new(move |f| h.reload(f).map_err(|e| e.to_string()))
    } else {
        let b = base.with_env_filter(f).with_filter_reloading();
        let h = b.reload_handle();
        tracing::subscriber::set_global_default(b.finish()).map_err(|_| LogError::AlreadySet)?;
        Box::new(move |f| h.reload(f).map_err(|e| e.to_string()))
    };
    Ok(LogReload {
        set: (!pinned).then_some(set),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn section(json: bool, level: &str) -> LogConfig {
        LogConfig {
            json,
            level: level.to_string(),
        }
    }

    fn lines(buf: &Buf) -> Vec<String> {
        String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn json_lines_carry_fields_and_respect_level() {
        let buf = Buf::default();
        let sub = subscriber(&section(true, "info"), None, buf.clone(), true).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(server = "2001:db8::547", "leasequery sent");
            tracing::debug!("filtered out at info");
        });
        let lines = lines(&buf);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "leasequery sent");
        assert_eq!(v["server"], "2001:db8::547");
    }

    #[test]
    fn rust_log_overrides_config_level() {
        let buf = Buf::default();
        let sub = subscriber(&section(false, "warn"), Some("debug"), buf.clone(), false).unwrap();
        tracing::subscriber::with_default(sub, || tracing::debug!("visible via RUST_LOG"));
        let lines = lines(&buf);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("DEBUG") && lines[0].contains("visible via RUST_LOG"));
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsStr::new(""))),
            "empty NO_COLOR does not count"
        );
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }

    #[test]
    fn text_without_ansi_has_no_escapes_and_json_never_does() {
        for (json, ansi) in [(false, false), (true, true)] {
            let buf = Buf::default();
            let sub = subscriber(&section(json, "info"), None, buf.clone(), ansi).unwrap();
            tracing::subscriber::with_default(sub, || tracing::info!(k = 1, "hello"));
            let text = lines(&buf).join("\n");
            assert!(text.contains("hello"), "{text}");
            assert!(!text.contains('\x1b'), "json={json}: {text:?}");
        }
        // The flag does reach the formatter: with colour on, text carries escapes.
        let buf = Buf::default();
        let sub = subscriber(&section(false, "info"), None, buf.clone(), true).unwrap();
        tracing::subscriber::with_default(sub, || tracing::info!("hello"));
        assert!(lines(&buf).join("\n").contains("\x1b["));
    }

    #[test]
    fn bad_filters_name_their_source() {
        assert!(matches!(
            filter("info", Some("x=nonsense")),
            Err(LogError::BadEnvFilter(_))
        ));
        assert!(matches!(
            filter("x=nonsense", None),
            Err(LogError::BadLevel(_))
        ));
        assert!(filter("lqagent=debug,warn", Some("  ")).is_ok());
    }
}
