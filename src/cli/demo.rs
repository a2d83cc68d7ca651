//! `qvoice demo`: the in-process demo world ([`qvoice::demo`]) with the TUI in front of it. Without `--dir`
//! its files live in a fresh temporary folder that is removed when the demo ends (errors included).

use std::path::PathBuf;

use anyhow::Context as _;
use qvoice::config::Config;

use super::tui::run_tui;

/// Runs the demo until the user quits (or SIGTERM/SIGHUP); exit 0.
///
/// Fails when the demo registry or echo contact cannot start, or the folder cannot be created or removed.
pub async fn demo(dir: Option<PathBuf>) -> anyhow::Result<u8> {
    // Dropping the guard removes the folder, on every return path below.
    let (dir, temp) = match dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new().prefix("qvoice-demo-").tempdir().context("creating a temporary folder")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let log_file = dir.join("qvoice.log");
    let log = qvoice::logging::to_file_and_pane(&log_file)?;
    let devices = qvoice::demo::sound_card_works();
    let (demo, you) = qvoice::demo::Demo::start(&dir, devices).await?;
    tracing::info!(
        "demo: press d on `echo` to call it; you will hear yourself back after {:?}",
        qvoice::demo::ECHO_DELAY
    );
    tracing::info!("demo audio: {}", demo.audio_notice);
    let notice = demo.audio_notice.clone();
    let result = run_tui(you, &Config::default(), Some(log), &log_file).await;
    demo.stop().await?;
    result?;
    match temp {
        Some(t) => {
            let shown = t.path().display().to_string();
            t.close().with_context(|| format!("removing the demo folder {shown}"))?;
            println!(
                "qvoice demo finished; its temporary files ({shown}) were removed. Pass --dir DIR to keep the \
                 registry database, keys, log and what came back from echo."
            );
        }
        None => {
            println!("qvoice demo finished; {notice}");
            println!("demo files (registry database, keys, recordings, log) are in {}", dir.display());
        }
    }
    Ok(0)
}
