//! The checksums files are published with: MD5 (CIFAR-10, MNIST), SHA-256
//! (the hub's large files) and git's blob SHA-1 (the hub's small files).

use std::io::Read;
use std::path::Path;

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::error::{io, FetchError};

/// A published checksum of one file, as lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Checksum {
    /// MD5 of the file.
    Md5(String),
    /// SHA-256 of the file.
    Sha256(String),
    /// Git's object id of the file: SHA-1 of `blob <size>\0` and the bytes.
    GitBlob(String),
}

impl Checksum {
    /// The algorithm's name for messages.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Md5(_) => "MD5",
            Checksum::Sha256(_) => "SHA-256",
            Checksum::GitBlob(_) => "git blob SHA-1",
        }
    }

    /// The expected hex digest.
    pub fn expected(&self) -> &str {
        match self {
            Checksum::Md5(h) | Checksum::Sha256(h) | Checksum::GitBlob(h) => h,
        }
    }

    /// The digest of `bytes` by this checksum's algorithm (lower-case hex).
    pub fn digest_of(&self, mut bytes: impl Read, len: u64) -> std::io::Result<String> {
        fn run<D: Digest>(mut d: D, bytes: &mut impl Read) -> std::io::Result<String> {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = bytes.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                d.update(&buf[..n]);
            }
            Ok(hex(&d.finalize()))
        }
        match self {
            Checksum::Md5(_) => run(Md5::new(), &mut bytes),
            Checksum::Sha256(_) => run(Sha256::new(), &mut bytes),
            Checksum::GitBlob(_) => {
                let mut d = Sha1::new();
                d.update(format!("blob {len}\0").as_bytes());
                run(d, &mut bytes)
            }
        }
    }

    /// Checks the file `path`, downloaded from `url`: an error naming both,
    /// the algorithm, the expected and the found digest when they differ.
    pub fn verify(&self, path: &Path, url: &str) -> Result<(), FetchError> {
        let file = std::fs::File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        let found = self
            .digest_of(std::io::BufReader::new(file), len)
            .map_err(io(path))?;
        if found.eq_ignore_ascii_case(self.expected()) {
            Ok(())
        } else {
            Err(FetchError::Checksum {
                file: path.to_path_buf(),
                url: url.to_string(),
                algorithm: self.algorithm(),
                expected: self.expected().to_ascii_lowercase(),
                found,
            })
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: Checksum, bytes: &[u8]) -> String {
        c.digest_of(bytes, bytes.len() as u64).unwrap()
    }

    #[test]
    fn known_digests() {
        assert_eq!(
            digest(Checksum::Md5(String::new()), b"abc"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            digest(Checksum::Sha256(String::new()), b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // `git hash-object` of a file holding "hello\n".
        assert_eq!(
            digest(Checksum::GitBlob(String::new()), b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn a_wrong_checksum_names_file_algorithm_expected_and_found() {
        let dir = std::env::temp_dir().join(format!("shortcut-checksum-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("x.bin");
        std::fs::write(&file, b"abc").unwrap();
        Checksum::Md5("900150983CD24FB0D6963F7D28E17F72".into())
            .verify(&file, "http://h/x.bin")
            .unwrap();
        let err = Checksum::Md5("0".repeat(32))
            .verify(&file, "http://h/x.bin")
            .unwrap_err();
        let text = err.to_string();
        for part in [
            "x.bin",
            "MD5",
            &"0".repeat(32),
            "900150983cd24fb0d6963f7d28e17f72",
        ] {
            assert!(text.contains(part), "{text}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
