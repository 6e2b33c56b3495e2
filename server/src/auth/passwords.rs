//! Passwords: argon2id hashes (19 MiB and a few milliseconds of a core each), computed on a
//! small pool of dedicated threads, one per core, so a flood of logins cannot take the server's
//! memory or its threads. (On the general blocking pool every thread that ever hashed keeps its
//! own malloc arena with a 19 MiB block in it: a hundred logins took the server up by hundreds of
//! MiB.) Past a short queue a login is refused at once (503, `Retry-After`) instead of waiting.
//! Unknown user names are verified against a throwaway hash on the same pool, so they take as
//! long as wrong passwords.

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};

use std::cell::RefCell;

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};

use crate::error::{Error, Result};
use crate::model::hex;

/// Hashes that may wait for a thread, per core, before more are refused.
const QUEUE_PER_CORE: usize = 8;

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads' queue.
fn pool() -> &'static SyncSender<Job> {
    static POOL: OnceLock<SyncSender<Job>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(cores * QUEUE_PER_CORE);
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..cores {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "a password hashing thread could not start");
            }
        }
        tx
    })
}

/// Runs `work` (one argon2 computation) on the hashing threads: refused with 503 when their
/// queue is full.
async fn bounded<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(work());
    });
    match pool().try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(Error::Unavailable {
                retry_after_secs: 1,
                message: "the server is busy checking passwords: try again in a second".into(),
            });
        }
        Err(TrySendError::Disconnected(_)) => {
            return Err(Error::Internal(
                "the password hashing threads stopped".into(),
            ));
        }
    }
    rx.await
        .map_err(|_| Error::Internal("a password hash was dropped".into()))
}

thread_local! {
    /// The argon2 working memory of a hashing thread, allocated once and reused: allocating and
    /// freeing 19 MiB per hash leaves each malloc arena holding its own copy.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Computes a raw argon2 hash into `out` with this thread's reusable working memory.
fn argon2_into(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    BLOCKS.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        argon2
            .hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
            .map_err(Error::internal)
    })
}

/// Hashes a password with argon2id (default parameters, random salt), as a PHC string.
pub async fn hash_password(password: String) -> Result<String> {
    bounded(move || {
        let salt: [u8; 16] = rand::random();
        let params = Params::default();
        let mut out = vec![0u8; Params::DEFAULT_OUTPUT_LEN];
        argon2_into(
            Algorithm::Argon2id,
            Version::V0x13,
            params.clone(),
            password.as_bytes(),
            &salt,
            &mut out,
        )?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(Error::internal)?,
            salt: Some(Salt::new(&salt).map_err(Error::internal)?),
            hash: Some(Output::new(&out).map_err(Error::internal)?),
        };
        Ok(phc.to_string())
    })
    .await?
}

/// Checks a password against a PHC string; any unreadable hash is simply a mismatch.
fn verify_blocking(password: &str, phc: &str) -> bool {
    let check = || -> Option<bool> {
        let hash = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(hash.algorithm.as_str()).ok()?;
        let version = match hash.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&hash).ok()?;
        let salt = hash.salt.as_ref()?;
        let expected = hash.hash.as_ref()?;
        let mut out = vec![0u8; expected.len()];
        argon2_into(
            algorithm,
            version,
            params,
            password.as_bytes(),
            salt,
            &mut out,
        )
        .ok()?;
        // Constant time: every byte is compared whatever the first difference.
        let diff = out
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        Some(diff == 0 && out.len() == expected.len())
    };
    check().unwrap_or(false)
}

/// Verifies a password against a PHC string. `None` runs a verification against a throwaway
/// hash, so unknown usernames take as long as wrong passwords.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = match DUMMY.get() {
        Some(d) => d.clone(),
        None => {
            let made = hash_password(hex(&rand::random::<[u8; 16]>())).await?;
            DUMMY.get_or_init(|| made).clone()
        }
    };
    bounded(move || verify_blocking(&password, hash.as_deref().unwrap_or(&dummy))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_read_hashes_made_by_the_argon2_crate() {
        let hash = hash_password("linli-demo".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            verify_password("linli-demo".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify_password("linli-dem0".into(), Some(hash))
                .await
                .unwrap()
        );
        // A hash made the crate's usual way (as stored before) verifies the same.
        use argon2::password_hash::PasswordHasher;
        let stored = Argon2::default()
            .hash_password(b"old-password")
            .unwrap()
            .to_string();
        assert!(
            verify_password("old-password".into(), Some(stored))
                .await
                .unwrap()
        );
        assert!(!verify_password("x".into(), None).await.unwrap());
        assert!(
            !verify_password("x".into(), Some("not a hash".into()))
                .await
                .unwrap()
        );
    }
}
