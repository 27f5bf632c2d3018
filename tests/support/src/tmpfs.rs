//! A small tmpfs the test mounts (root only) to make a full disk on purpose: [`SmallFs::fill`]
//! takes every free byte with a filler file, [`SmallFs::free`] gives them back; unmounted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted at a directory; lazily unmounted when dropped.
#[derive(Debug)]
pub struct SmallFs {
    path: PathBuf,
}

impl SmallFs {
    /// Mount a tmpfs of `size` (e.g. "256k") at `path` (made if missing).
    pub fn mount(path: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount tmpfs: {out:?}");
        SmallFs {
            path: path.to_path_buf(),
        }
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Fill the file system to the last byte (the filler grows until ENOSPC).
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("create filler");
        let block = [0xa5u8; 4096];
        while f.write_all(&block).is_ok() {}
        let one = [0u8; 1];
        while f.write_all(&one).is_ok() {}
        let _ = f.sync_all();
    }

    /// Give the filler's space back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}
