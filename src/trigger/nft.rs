//! Running `nft -f -`: one script, one atomic transaction, bounded in time. Equals
//! `nft -f - <<EOF ... EOF` at a shell.

use crate::time::Duration;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

/// Why a transaction did not apply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("nft failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("nft took longer than {0:?} and was killed")]
    Timeout(Duration),
    /// A set update written over nf_tables netlink ([`super::nfset`]) could not be sent or read.
    #[error("nf_tables netlink socket: {0}")]
    Netlink(std::io::Error),
    /// The kernel refused a set update (the whole transaction is undone).
    #[error("nf_tables refused the set update: {0}")]
    Refused(std::io::Error),
    #[error("no answer from nf_tables within {0:?}")]
    NoAnswer(Duration),
}

/// Where `nft` is unless `[trigger] nft_path` says otherwise: an absolute path, never a `PATH`
/// lookup (the environment must not choose the program that rewrites the firewall).
pub(crate) const DEFAULT_NFT: &str = "/usr/sbin/nft";

/// Longest stderr kept in an error.
const STDERR_MAX: usize = 2048;

/// Feeds `script` to `program -f -` and waits (the child is killed if this future is dropped).
/// CANCEL-SAFETY: cancelling kills `nft`; nf_tables transactions are atomic, so either all of the
/// script applied or none of it.
pub(crate) async fn run(program: &str, script: &str, timeout: Duration) -> Result<(), NftError> {
    let spawn_err = |source| NftError::Spawn {
        program: program.to_string(),
        source,
    };
    let mut child = tokio::process::Command::new(program)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    let mut stdin = child.stdin.take();
    let work = async {
        if let Some(mut w) = stdin.take() {
            w.write_all(script.as_bytes()).await.map_err(spawn_err)?;
            w.shutdown().await.map_err(spawn_err)?;
        }
        child.wait_with_output().await.map_err(spawn_err)
    };
    let out = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| NftError::Timeout(timeout))??;
    if out.status.success() {
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.len() > STDERR_MAX {
        let mut cut = STDERR_MAX;
        while !stderr.is_char_boundary(cut) {
            cut -= 1;
        }
        stderr.truncate(cut);
    }
    Err(NftError::Failed {
        status: out.status.to_string(),
        stderr: stderr.trim().to_string(),
    })
}

/// The blocking form, for `Drop` (shutdown without a runtime).
pub(crate) fn run_blocking(program: &str, script: &str) -> Result<(), NftError> {
    use std::io::Write;
    let spawn_err = |source| NftError::Spawn {
        program: program.to_string(),
        source,
    };
    let mut child = std::process::Command::new(program)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut w) = child.stdin.take() {
        w.write_all(script.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Failed {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(STDERR_MAX)
                .collect(),
        })
    }
}
