//! `botwire verify`: checks a Standard Webhooks signature, for people
//! writing receivers. Prints `valid` (exit 0) or `invalid: <reason>`
//! (exit 1).

use crate::delivery::signing::{self, Secret};
use clap::Args;
use std::io::Read;
use std::path::PathBuf;

/// Flags of `botwire verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The endpoint secret, `whsec_…`.
    #[arg(long)]
    secret: String,
    /// The `webhook-id` header.
    #[arg(long)]
    id: String,
    /// The `webhook-timestamp` header (seconds since the epoch).
    #[arg(long)]
    timestamp: String,
    /// The `webhook-signature` header (one or more `v1,…`, space-separated).
    #[arg(long)]
    signature: String,
    /// The raw request body, exactly as received (`-` for stdin).
    #[arg(long)]
    body: PathBuf,
    /// Seconds the timestamp may be away from now; 0 skips the check.
    #[arg(long, default_value_t = signing::DEFAULT_TOLERANCE_SECS)]
    tolerance: u64,
}

/// Checks the signature; answers whether it is valid, with the reason.
pub fn check(args: &VerifyArgs, body: &[u8], now_secs: i64) -> Result<(), String> {
    let secret = Secret::parse(&args.secret).map_err(|e| format!("--secret: {e}"))?;
    let (now, tolerance) = if args.tolerance == 0 {
        // Skip the freshness check: judge the timestamp against itself.
        (
            args.timestamp.trim().parse().unwrap_or(now_secs),
            u64::MAX / 2,
        )
    } else {
        (now_secs, args.tolerance)
    };
    signing::verify(
        &[secret],
        &args.id,
        &args.timestamp,
        &args.signature,
        body,
        now,
        tolerance,
    )
    .map_err(|e| e.to_string())
}

/// Runs the command; exits 1 when the signature is not valid.
pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let body = if args.body.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        buf
    } else {
        std::fs::read(&args.body)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.body.display()))?
    };
    match check(&args, &body, chrono::Utc::now().timestamp()) {
        Ok(()) => {
            println!("valid");
            Ok(())
        }
        Err(reason) => {
            println!("invalid: {reason}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(secret: &Secret, sig: String, ts: i64, tolerance: u64) -> VerifyArgs {
        VerifyArgs {
            secret: secret.to_string(),
            id: "evt_1".into(),
            timestamp: ts.to_string(),
            signature: sig,
            body: PathBuf::from("-"),
            tolerance,
        }
    }

    #[test]
    fn valid_invalid_and_stale() {
        let s = Secret::generate();
        let now = 1_800_000_000;
        let sig = signing::sign(&s, "evt_1", now, b"{}");
        assert_eq!(check(&args(&s, sig.clone(), now, 300), b"{}", now), Ok(()));
        let e = check(&args(&s, sig.clone(), now, 300), b"{ }", now).unwrap_err();
        assert!(e.contains("no signature matches"), "{e}");
        let e = check(&args(&s, sig.clone(), now, 300), b"{}", now + 3600).unwrap_err();
        assert!(e.contains("old"), "{e}");
        assert_eq!(check(&args(&s, sig, now, 0), b"{}", now + 3600), Ok(()));
        let mut bad = args(&s, "v1,x".into(), now, 300);
        bad.secret = "nope".into();
        assert!(check(&bad, b"{}", now).unwrap_err().contains("--secret"));
    }
}
