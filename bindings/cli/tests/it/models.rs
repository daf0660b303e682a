//! `tribute models pull` without a hub: the errors a user sees.

use super::{run, stderr, tribute};

#[test]
fn pull_offline_names_the_cache_to_copy_into() {
    let home = tempfile::tempdir().expect("tempdir");
    // Port 9 on localhost (discard) is closed on any test machine.
    let o = run(tribute()
        .args([
            "models",
            "pull",
            "some-org/some-model@main",
            "--endpoint",
            "http://127.0.0.1:9",
        ])
        .env("TRIBUTE_HOME", home.path()));
    assert!(!o.status.success());
    let err = stderr(&o);
    let snapshot = home
        .path()
        .join("hub/models--some-org--some-model/snapshots/main");
    assert!(
        err.contains("cannot download some-org/some-model@main"),
        "{err}"
    );
    assert!(err.contains(&snapshot.display().to_string()), "{err}");

    let o = run(tribute()
        .args(["models", "pull", "not-a-repo"])
        .env("TRIBUTE_HOME", home.path()));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid model spec"), "{}", stderr(&o));
}
