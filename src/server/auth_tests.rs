//! Client authentication: tokens, bcrypt users, the check cap and back-off.

use super::*;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn refused() -> Arc<Metrics> {
    Arc::new(Metrics::new().unwrap())
}

fn config(dir: &Path, password_checks: usize, failure_limit: u32) -> ClientAuthConfig {
    ClientAuthConfig {
        tokens_file: Some(dir.join("tokens")),
        htpasswd_file: Some(dir.join("htpasswd")),
        password_checks,
        failure_limit,
        failure_backoff: Duration::from_secs(60),
    }
}

const PEER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

#[tokio::test]
async fn tokens_and_bcrypt_users_identify_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "ci-runner:s3cr3t-token\n").unwrap();
    let hash = bcrypt::hash("hunter2", 4).unwrap();
    std::fs::write(
        dir.path().join("htpasswd"),
        format!("alice:{hash}\nbob:plaintext\n"),
    )
    .unwrap();
    let auth = ClientAuth::new(&config(dir.path(), 4, 0), refused());
    let id = |h: Option<String>| {
        let auth = &auth;
        async move { auth.identify(h.as_deref(), PEER).await.ok() }
    };
    assert_eq!(
        id(Some("Bearer s3cr3t-token".into())).await.as_deref(),
        Some("ci-runner")
    );
    assert_eq!(
        id(Some(basic("ci-runner", "s3cr3t-token")))
            .await
            .as_deref(),
        Some("ci-runner")
    );
    assert_eq!(
        id(Some(basic("alice", "hunter2"))).await.as_deref(),
        Some("alice")
    );
    assert_eq!(
        id(Some(basic("alice", "hunter2"))).await.as_deref(),
        Some("alice")
    );
    for bad in [
        None,
        Some("Bearer wrong".to_string()),
        Some(basic("alice", "wrong")),
        Some(basic("bob", "plaintext")),
        Some(basic("mallory", "s3cr3t-token")),
        Some("Basic !!!".to_string()),
    ] {
        assert_eq!(
            auth.identify(bad.as_deref(), PEER).await,
            Err(Refusal::Unauthorized),
            "{bad:?}"
        );
    }
    // Rotation: the old token stops working once the file changes.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&tokens, "ci-runner:rotated-token-value\n").unwrap();
    let later = SystemTime::now() + Duration::from_secs(5);
    let f = std::fs::File::options().write(true).open(&tokens).unwrap();
    f.set_modified(later).unwrap();
    assert_eq!(id(Some("Bearer s3cr3t-token".into())).await, None);
    assert_eq!(
        id(Some("Bearer rotated-token-value".into()))
            .await
            .as_deref(),
        Some("ci-runner")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_check_past_the_cap_is_refused_at_once_and_tokens_and_remembered_passwords_pass()
{
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens"), "ci-runner:s3cr3t-token\n").unwrap();
    // Cost 12: a check takes a good fraction of a second.
    let slow = bcrypt::hash("hunter2", 12).unwrap();
    let fast = bcrypt::hash("remembered", 4).unwrap();
    std::fs::write(
        dir.path().join("htpasswd"),
        format!("alice:{slow}\ncarol:{fast}\n"),
    )
    .unwrap();
    let refused = refused();
    let auth = Arc::new(ClientAuth::new(&config(dir.path(), 1, 0), refused.clone()));
    assert_eq!(
        auth.identify(Some(&basic("carol", "remembered")), PEER)
            .await
            .as_deref(),
        Ok("carol")
    );
    let running = {
        let auth = Arc::clone(&auth);
        tokio::spawn(async move { auth.identify(Some(&basic("alice", "wrong")), PEER).await })
    };
    // Wait until the check holds the only permit.
    while auth.checks.available_permits() > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    assert_eq!(
        auth.identify(Some(&basic("alice", "other")), PEER).await,
        Err(Refusal::Saturated)
    );
    assert_eq!(
        auth.identify(Some("Bearer s3cr3t-token"), PEER)
            .await
            .as_deref(),
        Ok("ci-runner")
    );
    assert_eq!(
        auth.identify(Some(&basic("carol", "remembered")), PEER)
            .await
            .as_deref(),
        Ok("carol")
    );
    // None of them waited for the running check, which is still going.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(
        auth.checks.available_permits() == 0,
        "the check had finished: the test proves nothing"
    );
    assert_eq!(running.await.unwrap(), Err(Refusal::Unauthorized));
    assert_eq!(
        refused
            .password_checks_refused
            .with_label_values(&["saturated"])
            .get(),
        1
    );
}

#[tokio::test]
async fn after_the_failure_limit_an_address_is_refused_without_bcrypt_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens"), "ci-runner:s3cr3t-token\n").unwrap();
    let hash = bcrypt::hash("hunter2", 4).unwrap();
    let dave = bcrypt::hash("remembered", 4).unwrap();
    std::fs::write(
        dir.path().join("htpasswd"),
        format!("alice:{hash}\ndave:{dave}\n"),
    )
    .unwrap();
    let refused = refused();
    let auth = ClientAuth::new(&config(dir.path(), 4, 3), refused.clone());
    let remembered = basic("dave", "remembered");
    let dave = || auth.identify(Some(&remembered), PEER);
    assert_eq!(dave().await.as_deref(), Ok("dave"));
    for _ in 0..3 {
        assert_eq!(
            auth.identify(Some(&basic("alice", "wrong")), PEER).await,
            Err(Refusal::Unauthorized)
        );
    }
    // Now even the right password from that address is refused, with
    // the time left to wait; no check runs.
    let Err(Refusal::BackedOff { retry_after }) =
        auth.identify(Some(&basic("alice", "hunter2")), PEER).await
    else {
        panic!("not backed off");
    };
    assert!(retry_after > Duration::from_secs(55) && retry_after <= Duration::from_secs(60));
    assert_eq!(
        refused
            .password_checks_refused
            .with_label_values(&["backoff"])
            .get(),
        1
    );
    // A password verified before still passes from it.
    assert_eq!(dave().await.as_deref(), Ok("dave"));
    // Tokens from it still pass; another address is unaffected; so is a
    // neighbour in another IPv6 /64 but not one in the same /64.
    assert!(
        auth.identify(Some("Bearer s3cr3t-token"), PEER)
            .await
            .is_ok()
    );
    let other = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8)));
    assert_eq!(
        auth.identify(Some(&basic("alice", "hunter2")), other)
            .await
            .as_deref(),
        Ok("alice")
    );
    let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    for _ in 0..3 {
        let _ = auth
            .identify(Some(&basic("alice", "wrong")), v6("2001:db8:1:2::1"))
            .await;
    }
    assert!(matches!(
        auth.identify(Some(&basic("alice", "x")), v6("2001:db8:1:2::99"))
            .await,
        Err(Refusal::BackedOff { .. })
    ));
    assert_eq!(
        auth.identify(Some(&basic("alice", "x")), v6("2001:db8:1:3::1"))
            .await,
        Err(Refusal::Unauthorized)
    );
}

#[tokio::test]
async fn failures_count_toward_back_off_only_within_one_window() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("hunter2", 4).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("alice:{hash}\n")).unwrap();
    let window = Duration::from_millis(300);
    let auth = ClientAuth::new(
        &ClientAuthConfig {
            failure_backoff: window,
            ..config(dir.path(), 4, 3)
        },
        refused(),
    );
    let bad = basic("alice", "wrong");
    let wrong = || auth.identify(Some(&bad), PEER);
    // Two failures, a window's pause, two more: never three in one window.
    for _ in 0..2 {
        assert_eq!(wrong().await, Err(Refusal::Unauthorized));
    }
    tokio::time::sleep(window + Duration::from_millis(100)).await;
    for _ in 0..2 {
        assert_eq!(wrong().await, Err(Refusal::Unauthorized));
    }
    assert_eq!(
        auth.identify(Some(&basic("alice", "hunter2")), PEER)
            .await
            .as_deref(),
        Ok("alice"),
        "a user who mistypes now and then is not backed off"
    );
}
