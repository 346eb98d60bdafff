//! Running a test again in a child process, with environment variables set: edition 2024
//! makes `std::env::set_var` unsafe, and the crate forbids unsafe code.

/// Runs this same test in a child process with `vars` set (edition 2024 makes `set_var`
/// unsafe, and this crate forbids unsafe code) and asserts that it passed there.
pub async fn rerun_with_env(test: &str, vars: &[(&str, &str)]) {
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .envs(vars.iter().copied())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child run of {test} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "child run of {test} ran no test:\n{stdout}"
    );
    // Pass a skip notice on.
    if stderr.contains("skipped:") {
        eprintln!("{stderr}");
    }
}
