//! Issue 30 point 3 at the engine: claims are decided by one compare-and-swap, so of two
//! overlapping copies claimed at the same instant exactly one wins, round after round; a dead
//! holder's claim is taken over only by the same copy.

use std::sync::Arc;

use trailcopy::claims::{self, Claim, Holder, NoProbe};
use trailcopy::storage::{LocalStore, ObjectStore};

fn claim(id: &str, start: &str, end: &str, holder: Holder) -> Claim {
    Claim {
        copy_id: id.into(),
        source: "s3://trail/AWSLogs/".into(),
        start: start.parse().unwrap(),
        end: end.parse().unwrap(),
        holder,
        since: jiff::Timestamp::now(),
    }
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("trailcopy-claims-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_overlapping_claims_made_at_once_exactly_one_wins_every_round() {
    let dir = temp("race");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.clone()));
    const ROUNDS: usize = 40;
    for round in 0..ROUNDS {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        let ca = claim(&a, "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z", Holder::this_process());
        let cb = claim(&b, "2026-01-02T00:00:00Z", "2026-01-04T00:00:00Z", Holder::this_process());
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let race = |c: Claim| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                claims::claim(store.as_ref(), "", &c, false, &NoProbe).await
            })
        };
        let (ra, rb) = (race(ca), race(cb));
        let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
        match (&ra, &rb) {
            (Ok(()), Err(e)) => {
                assert!(e.to_string().contains(&format!("overlaps copy `{a}`, which is running")), "{e}")
            }
            (Err(e), Ok(())) => {
                assert!(e.to_string().contains(&format!("overlaps copy `{b}`, which is running")), "{e}")
            }
            _ => panic!("round {round}: exactly one claim must win: {ra:?} {rb:?}"),
        }
        for id in [&a, &b] {
            claims::release(store.as_ref(), "", id).await.unwrap();
        }
        assert!(claims::claim_of(store.as_ref(), "", &a).await.unwrap().is_none());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_dead_holder_is_not_running_and_only_its_copy_takes_the_claim_over() {
    let dir = temp("dead");
    let store = LocalStore::new(dir.clone());
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = Holder::Process {
        pid: child.id(),
        host: match Holder::this_process() {
            Holder::Process { host, .. } => host,
            Holder::Execution { .. } => unreachable!(),
        },
    };
    child.wait().unwrap();
    let c = claim("crashed", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", dead);
    claims::claim(&store, "", &c, false, &NoProbe).await.unwrap();
    let why = claims::not_running(&store, "", "crashed", &NoProbe).await.unwrap();
    assert!(why.as_deref().is_some_and(|w| w.contains("is gone")), "{why:?}");
    // Another copy of the range is refused, and told to resume the crashed one.
    let other = claim("other", "2026-01-01T12:00:00Z", "2026-01-03T00:00:00Z", Holder::this_process());
    let e = claims::claim(&store, "", &other, false, &NoProbe).await.unwrap_err().to_string();
    assert!(e.contains("which is not running") && e.contains("trailcopy retry crashed"), "{e}");
    // The same copy (its retry) takes it over; then it is running, and a second taker is refused.
    let retry = claim("crashed", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", Holder::this_process());
    claims::claim(&store, "", &retry, true, &NoProbe).await.unwrap();
    assert_eq!(claims::not_running(&store, "", "crashed", &NoProbe).await.unwrap(), None);
    let again = claim(
        "crashed",
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        Holder::Process { pid: 1, host: "elsewhere".into() },
    );
    let e = claims::claim(&store, "", &again, true, &NoProbe).await.unwrap_err().to_string();
    assert!(e.contains("is running"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
